//! A blocking client for the helper's control socket: what the node agent and the tests use.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::protocol::{Request, Response};

/// One connection to the helper; requests are answered in order.
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ControlClient {
    pub fn connect(path: &Path) -> std::io::Result<ControlClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        Ok(ControlClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    pub fn call(&mut self, request: &Request) -> std::io::Result<Response> {
        let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "helper closed the control socket",
            ));
        }
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    }
}

/// Default control socket path.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/ferrovn/vhost.sock")
}
