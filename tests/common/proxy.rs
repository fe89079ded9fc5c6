//! A TCP proxy between a daemon and a service that a test can cut and restore, so that the
//! shared servers stay up for the other tests.

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` that can be cut (open connections are closed, new ones refused
/// at once) and restored.
pub struct Proxy {
    pub port: u16,
    up: watch::Sender<bool>,
}

impl Proxy {
    /// Runs on a thread of its own: the test's runtime is blocked whenever the test waits on
    /// the daemon.
    pub fn start(upstream: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let (up, watching) = watch::channel(true);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                while let Ok((mut client, _)) = listener.accept().await {
                    if !*watching.borrow() {
                        continue; // dropped: the connection is closed at once
                    }
                    let mut cut = watching.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.wait_for(|up| !*up) => {}
                        }
                    });
                }
            });
        });
        Proxy { port, up }
    }

    pub fn cut(&self) {
        let _ = self.up.send(false);
    }

    pub fn restore(&self) {
        let _ = self.up.send(true);
    }
}

/// The port a service URL names.
pub fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|tail| tail.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{url} names no port"))
}
