//! Small safe wrappers the Windows modules share: UTF-16 strings, handles,
//! SIDs to names, registry strings.

#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString, c_void};
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{FromRawHandle, OwnedHandle, RawHandle};
use std::path::Path;

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Security::{LookupAccountSidW, PSID, SID_NAME_USE};
use windows_sys::Win32::System::Registry::{
    HKEY, RRF_RT_REG_DWORD, RRF_RT_REG_SZ, RRF_SUBKEY_WOW6464KEY, RegGetValueW,
};

/// `s` as a NUL-terminated UTF-16 string.
pub(crate) fn wide(s: impl AsRef<OsStr>) -> Vec<u16> {
    s.as_ref().encode_wide().chain(Some(0)).collect()
}

/// The path as a NUL-terminated UTF-16 string.
pub(crate) fn wide_path(p: &Path) -> Vec<u16> {
    wide(p.as_os_str())
}

/// UTF-16 (up to the first NUL) as text, lossily.
pub(crate) fn from_wide(w: &[u16]) -> String {
    let end = w.iter().position(|&c| c == 0).unwrap_or(w.len());
    OsString::from_wide(&w[..end])
        .to_string_lossy()
        .into_owned()
}

/// Takes ownership of a handle a call returned; `None` for a null or
/// invalid one.
pub(crate) fn owned(h: HANDLE) -> Option<OwnedHandle> {
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return None;
    }
    // SAFETY: the caller passes a handle it just received and owns.
    Some(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

/// The account name of a SID, as `DOMAIN\name` (or `name` when there is
/// no domain).
///
/// # Safety
/// `sid` must point to a valid SID for the duration of the call.
pub(crate) unsafe fn account_name(sid: PSID) -> Option<String> {
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: the buffers and their lengths match; `sid` is valid (the
    // caller's promise).
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            sid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return None;
    }
    let (name, domain) = (from_wide(&name), from_wide(&domain));
    Some(if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    })
}

/// A string value (the 64-bit view).
pub(crate) fn reg_string(root: HKEY, key: &str, value: &str) -> Option<String> {
    reg_string_in(root, key, value, RRF_SUBKEY_WOW6464KEY)
}

/// A string value in a registry view (`RRF_SUBKEY_WOW6464KEY` or
/// `RRF_SUBKEY_WOW6432KEY`).
pub(crate) fn reg_string_in(root: HKEY, key: &str, value: &str, view: u32) -> Option<String> {
    let (key, value) = (wide(key), wide(value));
    let mut buf = vec![0u16; 1024];
    let mut len = (buf.len() * 2) as u32;
    // SAFETY: the strings are NUL-terminated; `len` is the buffer's size
    // in bytes.
    let status = unsafe {
        RegGetValueW(
            root,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ | view,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast::<c_void>(),
            &mut len,
        )
    };
    (status == 0)
        .then(|| from_wide(&buf))
        .filter(|s| !s.is_empty())
}

/// Deletes a value (the 64-bit view); a value or key that is not there is
/// no error. The error is the Win32 status (access denied, …).
pub(crate) fn reg_delete_value(root: HKEY, key: &str, value: &str) -> Result<(), u32> {
    use windows_sys::Win32::System::Registry::{
        KEY_SET_VALUE, KEY_WOW64_64KEY, RegCloseKey, RegDeleteValueW, RegOpenKeyExW,
    };
    let (key_w, value_w) = (wide(key), wide(value));
    let mut h: HKEY = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings; the key handle is closed below.
    let status = unsafe {
        RegOpenKeyExW(
            root,
            key_w.as_ptr(),
            0,
            KEY_SET_VALUE | KEY_WOW64_64KEY,
            &mut h,
        )
    };
    // ERROR_FILE_NOT_FOUND: no key, so no value.
    match status {
        0 => {}
        2 => return Ok(()),
        e => return Err(e),
    }
    // SAFETY: `h` is open with KEY_SET_VALUE.
    let status = unsafe { RegDeleteValueW(h, value_w.as_ptr()) };
    // SAFETY: opened above.
    unsafe { RegCloseKey(h) };
    if status == 0 || status == 2 {
        Ok(())
    } else {
        Err(status)
    }
}

/// A DWORD value (the 64-bit view).
pub(crate) fn reg_dword(root: HKEY, key: &str, value: &str) -> Option<u32> {
    reg_dword_in(root, key, value, RRF_SUBKEY_WOW6464KEY)
}

/// A DWORD value in a registry view.
pub(crate) fn reg_dword_in(root: HKEY, key: &str, value: &str, view: u32) -> Option<u32> {
    let (key, value) = (wide(key), wide(value));
    let mut out = 0u32;
    let mut len = 4u32;
    // SAFETY: as above; the output is 4 bytes.
    let status = unsafe {
        RegGetValueW(
            root,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_DWORD | view,
            std::ptr::null_mut(),
            (&mut out as *mut u32).cast::<c_void>(),
            &mut len,
        )
    };
    (status == 0).then_some(out)
}

/// A known folder's path (`FOLDERID_ProgramData`, `FOLDERID_UserProfiles`).
pub(crate) fn known_folder(id: &windows_sys::core::GUID) -> Option<std::path::PathBuf> {
    use windows_sys::Win32::System::Com::CoTaskMemFree;
    use windows_sys::Win32::UI::Shell::{KF_FLAG_DEFAULT, SHGetKnownFolderPath};
    let mut path: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `path` receives a CoTaskMemAlloc'd NUL-terminated string,
    // freed below (also on failure, as the documentation asks).
    let hr = unsafe {
        SHGetKnownFolderPath(id, KF_FLAG_DEFAULT as u32, std::ptr::null_mut(), &mut path)
    };
    let result = (hr >= 0 && !path.is_null()).then(|| {
        // SAFETY: a valid NUL-terminated string from the call above.
        let len = unsafe { (0..).take_while(|&i| *path.add(i) != 0).count() };
        // SAFETY: `len` characters are readable.
        std::path::PathBuf::from(from_wide(unsafe { std::slice::from_raw_parts(path, len) }))
    });
    // SAFETY: allocated by the call (or null, which it accepts).
    unsafe { CoTaskMemFree(path.cast()) };
    result
}

/// Sets a DWORD value, creating the key (a 64-bit process: the 64-bit
/// view).
pub(crate) fn reg_set_dword(root: HKEY, key: &str, value: &str, data: u32) -> Result<(), u32> {
    use windows_sys::Win32::System::Registry::{REG_DWORD, RegSetKeyValueW};
    let (key, value) = (wide(key), wide(value));
    // SAFETY: NUL-terminated strings; the data is 4 readable bytes.
    let status = unsafe {
        RegSetKeyValueW(
            root,
            key.as_ptr(),
            value.as_ptr(),
            REG_DWORD,
            (&data as *const u32).cast::<c_void>(),
            4,
        )
    };
    if status == 0 { Ok(()) } else { Err(status) }
}

/// Sets a string value, creating the key.
pub(crate) fn reg_set_string(root: HKEY, key: &str, value: &str, data: &str) -> Result<(), u32> {
    use windows_sys::Win32::System::Registry::{REG_SZ, RegSetKeyValueW};
    let (key, value, data) = (wide(key), wide(value), wide(data));
    // SAFETY: NUL-terminated strings; the data's size in bytes includes
    // its NUL.
    let status = unsafe {
        RegSetKeyValueW(
            root,
            key.as_ptr(),
            value.as_ptr(),
            REG_SZ,
            data.as_ptr().cast::<c_void>(),
            (data.len() * 2) as u32,
        )
    };
    if status == 0 { Ok(()) } else { Err(status) }
}

/// The names of a key's subkeys in a registry view (`KEY_WOW64_64KEY` or
/// `KEY_WOW64_32KEY`), at most `max`.
pub(crate) fn reg_subkeys_in(
    root: HKEY,
    key: &str,
    view: u32,
    max: usize,
) -> std::io::Result<Vec<String>> {
    use windows_sys::Win32::System::Registry::{
        KEY_ENUMERATE_SUB_KEYS, KEY_READ, RegCloseKey, RegEnumKeyExW, RegOpenKeyExW,
    };
    let key_w = wide(key);
    let mut h: HKEY = std::ptr::null_mut();
    // SAFETY: a NUL-terminated name; the handle is closed below.
    let status = unsafe {
        RegOpenKeyExW(
            root,
            key_w.as_ptr(),
            0,
            KEY_READ | KEY_ENUMERATE_SUB_KEYS | view,
            &mut h,
        )
    };
    if status != 0 {
        return Err(std::io::Error::from_raw_os_error(status as i32));
    }
    let mut out = Vec::new();
    // A key name is at most 255 characters.
    let mut name = [0u16; 256];
    for i in 0.. {
        if out.len() >= max {
            break;
        }
        let mut len = name.len() as u32;
        // SAFETY: `len` is the buffer's size in characters.
        let status = unsafe {
            RegEnumKeyExW(
                h,
                i,
                name.as_mut_ptr(),
                &mut len,
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if status != 0 {
            break; // ERROR_NO_MORE_ITEMS, or a name too long to be one.
        }
        out.push(from_wide(&name[..len as usize]));
    }
    // SAFETY: opened above.
    unsafe { RegCloseKey(h) };
    Ok(out)
}

/// The names of a key's subkeys in the 64-bit view (none when it cannot be
/// opened).
pub(crate) fn reg_subkeys(root: HKEY, key: &str) -> Vec<String> {
    use windows_sys::Win32::System::Registry::KEY_WOW64_64KEY;
    reg_subkeys_in(root, key, KEY_WOW64_64KEY, 100_000).unwrap_or_default()
}

/// A binary value (the 64-bit view), up to 256 bytes.
pub(crate) fn reg_binary(root: HKEY, key: &str, value: &str) -> Option<Vec<u8>> {
    use windows_sys::Win32::System::Registry::RRF_RT_REG_BINARY;
    let (key, value) = (wide(key), wide(value));
    let mut buf = vec![0u8; 256];
    let mut len = buf.len() as u32;
    // SAFETY: NUL-terminated strings; `len` is the buffer's size.
    let status = unsafe {
        RegGetValueW(
            root,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_BINARY | RRF_SUBKEY_WOW6464KEY,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast::<c_void>(),
            &mut len,
        )
    };
    (status == 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

/// Deletes a key and everything below it (the 64-bit view); a key that is
/// not there is no error.
pub(crate) fn reg_delete_tree(root: HKEY, key: &str) -> Result<(), u32> {
    use windows_sys::Win32::System::Registry::RegDeleteTreeW;
    let key = wide(key);
    // SAFETY: a NUL-terminated key name.
    let status = unsafe { RegDeleteTreeW(root, key.as_ptr()) };
    // ERROR_FILE_NOT_FOUND: nothing to delete.
    if status == 0 || status == 2 {
        Ok(())
    } else {
        Err(status)
    }
}
