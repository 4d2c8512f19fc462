//! Windows's file durability and privacy. A file is made private by the
//! access list of the directory it is in (the state directory's allows
//! SYSTEM and Administrators only, and its files inherit it); a rename is
//! made durable by `MoveFileExW` with write-through. Windows has no
//! directory fsync: NTFS journals its metadata, and the one unlink that
//! matters (a spool segment fully acked) is repeated at the next start if
//! a power cut undoes it.

#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use windows_sys::Win32::Foundation::{HLOCAL, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1, SE_FILE_OBJECT,
    SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR,
};
use windows_sys::Win32::Storage::FileSystem::{
    MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH, MoveFileExW,
};

use super::win::{wide, wide_path};

/// Full control for SYSTEM and the Administrators group, inherited by
/// files and subdirectories, nothing inherited from above.
pub(crate) const PRIVATE_SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

/// Files are private through their directory's access list.
pub(crate) fn private(opts: &mut OpenOptions, _mode: u32) -> &mut OpenOptions {
    opts
}

/// Renames `from` over `to`, durably.
pub(crate) fn replace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (wide_path(from), wide_path(to));
    // SAFETY: both paths are NUL-terminated UTF-16.
    let ok = unsafe {
        MoveFileExW(
            from.as_ptr(),
            to.as_ptr(),
            MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Nothing to do on Windows (see the module's documentation).
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Creates `dir` (and parents), refuses it if it is a junction or link,
/// makes Administrators its owner and gives it [`PRIVATE_SDDL`]. The owner matters: a user who created the
/// directory first (anyone may create folders in `%ProgramData%`) would
/// otherwise keep the owner's right to rewrite its access list. Taking it
/// over needs the service's take-ownership and restore privileges, which
/// the agent enables when a plain attempt is refused.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::windows::fs::MetadataExt;
    std::fs::create_dir_all(dir)?;
    // A junction or link put there first would send the agent's writes
    // (as SYSTEM) and its access list elsewhere.
    if std::fs::symlink_metadata(dir)?.file_attributes() & 0x400 != 0 {
        return Err(io::Error::other(format!(
            "{} is a junction or a link (FILE_ATTRIBUTE_REPARSE_POINT): refusing to keep the agent's state there; remove it",
            dir.display()
        )));
    }
    if let Err(e) = set_owner_administrators(dir) {
        let refused = matches!(e.raw_os_error(), Some(5) | Some(1307));
        if !(refused && enable_privileges() && set_owner_administrators(dir).is_ok()) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot make Administrators the state directory's owner");
        }
    }
    set_sddl(dir, PRIVATE_SDDL)
}

/// Makes the Administrators group `path`'s owner.
fn set_owner_administrators(path: &Path) -> io::Result<()> {
    use windows_sys::Win32::Security::{GetSecurityDescriptorOwner, OWNER_SECURITY_INFORMATION};
    with_descriptor("O:BA", |sd| {
        let mut owner = std::ptr::null_mut();
        let mut defaulted = 0;
        // SAFETY: `sd` is valid; `owner` points into it while it lives.
        if unsafe { GetSecurityDescriptorOwner(sd, &mut owner, &mut defaulted) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let path = wide_path(path);
        // SAFETY: NUL-terminated path; `owner` is valid while `sd` is.
        match unsafe {
            SetNamedSecurityInfoW(
                path.as_ptr(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION,
                owner,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        } {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e as i32)),
        }
    })
}

/// Calls `f` with the security descriptor `sddl` describes (freed after).
fn with_descriptor(
    sddl: &str,
    f: impl FnOnce(PSECURITY_DESCRIPTOR) -> io::Result<()>,
) -> io::Result<()> {
    let sddl = wide(sddl);
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated; `sd` receives a LocalAlloc'd
    // descriptor, freed below.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let result = f(sd);
    // SAFETY: `sd` was allocated by the conversion with LocalAlloc.
    unsafe { LocalFree(sd as HLOCAL) };
    result
}

/// Enables the take-ownership and restore privileges in the agent's own
/// token (LocalSystem holds them, disabled); whether both are on.
fn enable_privileges() -> bool {
    use windows_sys::Win32::Security::{
        AdjustTokenPrivileges, LUID_AND_ATTRIBUTES, LookupPrivilegeValueW, SE_PRIVILEGE_ENABLED,
        TOKEN_ADJUST_PRIVILEGES, TOKEN_PRIVILEGES, TOKEN_QUERY,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    let mut token = std::ptr::null_mut();
    // SAFETY: the current process's pseudo-handle; the token is owned below.
    if unsafe {
        OpenProcessToken(
            GetCurrentProcess(),
            TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY,
            &mut token,
        )
    } == 0
    {
        return false;
    }
    let Some(token) = super::win::owned(token) else {
        return false;
    };
    ["SeTakeOwnershipPrivilege", "SeRestorePrivilege"]
        .iter()
        .all(|name| {
            let name = wide(name);
            // SAFETY: all-zero is a valid LUID to fill.
            let mut luid = unsafe { std::mem::zeroed() };
            // SAFETY: a NUL-terminated privilege name.
            if unsafe { LookupPrivilegeValueW(std::ptr::null(), name.as_ptr(), &mut luid) } == 0 {
                return false;
            }
            let privileges = TOKEN_PRIVILEGES {
                PrivilegeCount: 1,
                Privileges: [LUID_AND_ATTRIBUTES {
                    Luid: luid,
                    Attributes: SE_PRIVILEGE_ENABLED,
                }],
            };
            // SAFETY: a token opened with TOKEN_ADJUST_PRIVILEGES; one
            // privilege given. Success with ERROR_NOT_ALL_ASSIGNED means
            // the token lacks it.
            let ok = unsafe {
                AdjustTokenPrivileges(
                    std::os::windows::io::AsRawHandle::as_raw_handle(&token) as _,
                    0,
                    &privileges,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            ok != 0 && io::Error::last_os_error().raw_os_error() != Some(1300)
        })
}

/// Replaces `path`'s access list with the one `sddl` describes.
pub(crate) fn set_sddl(path: &Path, sddl: &str) -> io::Result<()> {
    with_descriptor(sddl, |sd| {
        let mut present = 0;
        let mut defaulted = 0;
        let mut dacl: *mut ACL = std::ptr::null_mut();
        // SAFETY: `sd` is a valid descriptor.
        if unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let path = wide_path(path);
        // SAFETY: the path is NUL-terminated; `dacl` points into `sd`,
        // alive during the call.
        let status = unsafe {
            SetNamedSecurityInfoW(
                path.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                dacl,
                std::ptr::null(),
            )
        };
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
        Ok(())
    })
}

/// Whether only SYSTEM and Administrators may open `path`: its access
/// list (as SDDL) allows no one else.
#[cfg(test)]
pub(crate) fn only_the_agent_reads(path: &Path) -> io::Result<bool> {
    let sddl = sddl_of(path)?;
    let dacl = sddl.split_once("D:").map_or("", |(_, d)| d);
    let aces: Vec<&str> = dacl
        .split('(')
        .skip(1)
        .map(|a| a.trim_end_matches(')'))
        .collect();
    Ok(!aces.is_empty()
        && aces.iter().all(|ace| {
            let fields: Vec<&str> = ace.split(';').collect();
            fields.first() == Some(&"D") || matches!(fields.last(), Some(&"SY") | Some(&"BA"))
        }))
}

/// `path`'s access list as SDDL.
#[cfg(test)]
pub(crate) fn sddl_of(path: &Path) -> io::Result<String> {
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetNamedSecurityInfoW,
    };
    let wide = wide_path(path);
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: the path is NUL-terminated; `sd` is LocalAlloc'd, freed below.
    let status = unsafe {
        GetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | windows_sys::Win32::Security::OWNER_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `sd` is valid; `text` is LocalAlloc'd, freed below.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION | windows_sys::Win32::Security::OWNER_SECURITY_INFORMATION,
            &mut text,
            std::ptr::null_mut(),
        )
    };
    let result = if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a NUL-terminated string from the call.
        let len = unsafe { (0..).take_while(|&i| *text.add(i) != 0).count() };
        // SAFETY: `len` characters are readable.
        Ok(super::win::from_wide(unsafe {
            std::slice::from_raw_parts(text, len)
        }))
    };
    // SAFETY: both were LocalAlloc'd by the calls above (or are null).
    unsafe {
        LocalFree(text as HLOCAL);
        LocalFree(sd as HLOCAL);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wine 8.0 accepts the access list and does not apply it (the
    /// directory keeps its mode-derived list): on a real Windows PC only.
    #[test]
    #[ignore = "Wine does not apply file access lists; run on Windows"]
    fn a_private_directory_and_its_files_are_for_system_and_administrators() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        create_private_dir(&state).unwrap();
        let sddl = sddl_of(&state).unwrap();
        assert!(
            sddl.contains("D:P"),
            "the access list is not protected: {sddl}"
        );
        assert!(only_the_agent_reads(&state).unwrap(), "{sddl}");
        // Administrators own it, not whoever created it first.
        assert!(sddl.starts_with("O:BA"), "{sddl}");
        let file = state.join("credential");
        std::fs::write(&file, b"x").unwrap();
        assert!(
            only_the_agent_reads(&file).unwrap(),
            "{}",
            sddl_of(&file).unwrap()
        );
    }

    #[test]
    fn replace_moves_over_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        replace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }
}
