//! Client sockets shared by `herald-load` and `herald-soak`: a non-blocking connect from a
//! chosen loopback source address. The only socket code the two tools share.

use mio::net::TcpStream;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// A non-blocking connect from `src` (port chosen at connect time, so every source address
/// has its own ephemeral port range per destination).
pub fn connect_from(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    if let Some(ip) = src {
        // IP_BIND_ADDRESS_NO_PORT: pick the port at connect(), not at bind(), so the 4-tuple
        // rather than the local port alone must be unique.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` (an int) for the given length; the fd is ours.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match s.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}
