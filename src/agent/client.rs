//! The agent's client side: `p8hsm token …` and `p8hsm sign …` with `P8HSM_AGENT_SOCK` set.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use p8hsm::Error;

use serde::Serialize;

use super::protocol::Reply;
use crate::cli::signing::{Call, Signed};

/// A request as a client writes it: the same JSON as
/// [`Request`](super::protocol::Request), borrowing the call.
#[derive(Serialize)]
struct RequestRef<'a> {
    id: serde_json::Value,
    #[serde(flatten)]
    call: &'a Call,
}

/// How long a client waits for the agent.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `call` to the agent listening on `socket` and returns what it signed.
pub fn call(socket: &Path, call: &Call) -> Result<Signed, Error> {
    let unreachable = |e: std::io::Error| Error::AgentUnreachable {
        socket: socket.to_path_buf(),
        reason: e.to_string(),
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    let mut line = serde_json::to_vec(&RequestRef {
        id: serde_json::Value::from(1),
        call,
    })
    .map_err(Error::internal)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(unreachable)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(unreachable)?;
    match serde_json::from_str::<Reply>(&reply) {
        Ok(Reply::Ok { result, .. }) => Ok(result),
        Ok(Reply::Err { error, .. }) => Err(Error::Agent {
            code: error.code,
            message: error.message,
            hint: error.hint,
        }),
        Err(_) => Err(Error::AgentUnreachable {
            socket: socket.to_path_buf(),
            reason: "the agent's answer is not its protocol".to_owned(),
        }),
    }
}
