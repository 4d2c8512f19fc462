/*
 * TEST-ONLY shim for Wine 8.0 (Debian 12). Never ship or package this DLL.
 *
 * Rust's standard library (>= 1.78) imports ProcessPrng from
 * bcryptprimitives.dll for its random numbers (HashMap's RandomState among
 * others). Wine 8.0 has no bcryptprimitives.dll, so every Rust-built
 * x86_64-pc-windows-gnu executable fails to load under it (status
 * c0000135). scripts/wine-prefix.sh builds this file with
 * x86_64-w64-mingw32-gcc into the test Wine prefix only (never into the
 * repository) and copies it to the prefix's system32. ProcessPrng just
 * forwards to BCryptGenRandom with the system-preferred RNG, which Wine has.
 * Real Windows (10 and later) has the real DLL.
 */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE pbData, SIZE_T cbData)
{
    /* ProcessPrng never fails on Windows; fill in chunks that fit a ULONG. */
    while (cbData > 0) {
        ULONG n = cbData > 0x40000000 ? 0x40000000 : (ULONG)cbData;
        if (BCryptGenRandom(NULL, pbData, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        pbData += n;
        cbData -= n;
    }
    return TRUE;
}
