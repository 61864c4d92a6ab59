//! Small safe wrappers over the system calls the init needs and std does not offer.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path as a C string; paths with NUL bytes cannot name files.
pub fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Turns a `-1` return into the errno error.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// mount(2).
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let to_c = |s: &str| {
        CString::new(s)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
    };
    let source = to_c(source)?;
    let target = c_path(target)?;
    let fstype = fstype.map(to_c).transpose()?;
    let data = data.map(to_c).transpose()?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call, or null.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })?;
    Ok(())
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: target is a valid C string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })?;
    Ok(())
}

/// lchown(2): owner of the link itself, never of its target.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: path is a valid C string.
    check(unsafe { libc::lchown(path.as_ptr(), uid, gid) })?;
    Ok(())
}

/// Sets access and modification times with nanoseconds, without following a symlink.
pub fn set_times_nofollow(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let path = c_path(path)?;
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: path is a valid C string and times holds the two entries utimensat reads.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// mknod(2), for device nodes, FIFOs and sockets.
pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: path is a valid C string.
    check(unsafe { libc::mknod(path.as_ptr(), mode, dev) })?;
    Ok(())
}

/// chroot(2).
pub fn chroot(path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: path is a valid C string.
    check(unsafe { libc::chroot(path.as_ptr()) })?;
    Ok(())
}

/// The filesystem type magic of the filesystem holding `path` (statfs f_type).
pub fn filesystem_magic(path: &Path) -> io::Result<i64> {
    let path = c_path(path)?;
    // SAFETY: statfs fills the zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statfs(path.as_ptr(), &mut stat) })?;
    Ok(stat.f_type as i64)
}
