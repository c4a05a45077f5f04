//! Remotes (`unix:/path`, `tcp:host:port`, comma-separated lists) and opening them.

use std::fmt;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// One server address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    /// `unix:/path/to/socket`
    Unix(std::path::PathBuf),
    /// `tcp:host:port` (IPv6 hosts in brackets: `tcp:[::1]:6641`)
    Tcp { host: String, port: u16 },
}

impl Remote {
    /// Parses one remote.
    pub fn parse(s: &str) -> Result<Remote> {
        let s = s.trim();
        let bad = |reason: &str| Error::InvalidRemote {
            remote: s.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(Remote::Unix(path.into()));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected tcp:HOST:PORT"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| bad("port is not a number in 1..=65535"))?;
            if port == 0 {
                return Err(bad("port 0 is not connectable"));
            }
            return Ok(Remote::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        if s.starts_with("ssl:") {
            return Err(bad("ssl remotes are not supported yet"));
        }
        Err(bad("expected unix:PATH or tcp:HOST:PORT"))
    }

    /// Parses a comma-separated list (a Raft cluster) of one or more remotes.
    pub fn parse_list(s: &str) -> Result<Vec<Remote>> {
        let list: Vec<Remote> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Remote::parse)
            .collect::<Result<_>>()?;
        if list.is_empty() {
            return Err(Error::InvalidRemote {
                remote: s.to_owned(),
                reason: "no remote given".into(),
            });
        }
        Ok(list)
    }

    /// Opens a byte stream to this remote.
    pub async fn connect(&self) -> Result<BoxedStream> {
        let err = |e: std::io::Error| Error::Connect {
            remote: self.to_string(),
            reason: e.to_string(),
        };
        match self {
            Remote::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(err)?;
                Ok(Box::pin(s))
            }
            Remote::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(err)?;
                // Requests are small and latency matters more than packet count.
                s.set_nodelay(true).map_err(err)?;
                Ok(Box::pin(s))
            }
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Remote::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

impl std::str::FromStr for Remote {
    type Err = Error;
    fn from_str(s: &str) -> Result<Remote> {
        Remote::parse(s)
    }
}

/// A connected, bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + 'static> Stream for T {}

/// The stream type connections run on.
pub type BoxedStream = Pin<Box<dyn Stream>>;

/// Formats a list of remotes back into the comma-separated form.
pub fn display_list(remotes: &[Remote]) -> String {
    remotes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remotes() {
        assert_eq!(
            Remote::parse("unix:/run/ovn/ovnnb_db.sock").unwrap(),
            Remote::Unix("/run/ovn/ovnnb_db.sock".into())
        );
        assert_eq!(
            Remote::parse("tcp:127.0.0.1:6641").unwrap(),
            Remote::Tcp {
                host: "127.0.0.1".into(),
                port: 6641
            }
        );
        assert_eq!(
            Remote::parse("tcp:[::1]:6641").unwrap().to_string(),
            "tcp:[::1]:6641"
        );
        let list = Remote::parse_list("tcp:127.0.0.1:6641, tcp:127.0.0.1:6643,unix:/x").unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            display_list(&list),
            "tcp:127.0.0.1:6641,tcp:127.0.0.1:6643,unix:/x"
        );
    }

    #[test]
    fn rejects_bad_remotes() {
        for bad in [
            "",
            "unix:",
            "tcp:1.2.3.4",
            "tcp::80",
            "tcp:h:0",
            "tcp:h:99999",
            "ssl:h:1",
            "h:1",
        ] {
            assert!(
                matches!(Remote::parse_list(bad), Err(Error::InvalidRemote { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
