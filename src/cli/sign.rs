//! `p8hsm token KIND` and `p8hsm sign KIND`: the options become the library's `Request`
//! once; it is signed with the token, or by the agent at `P8HSM_AGENT_SOCK` — with the
//! same output and exit status either way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use p8hsm::protocol::{self, Reply};
use p8hsm::{Request, Service, Signed};

use super::request::RequestArgs;
use super::{json_line, Config};
use crate::failure::{print, Failure};

/// How long a client waits for the agent.
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn sign(args: RequestArgs, config: &Config) -> Result<(), Failure> {
    let json = args.json;
    let key_id = config.key_id(args.key_id.as_ref())?;
    let request = args.into_request(key_id)?;
    let signed = match std::env::var_os("P8HSM_AGENT_SOCK").filter(|s| !s.is_empty()) {
        Some(socket) => via_agent(Path::new(&socket), &request)?,
        None => {
            // Refused before any PIN is read.
            request.precheck(SystemTime::now())?;
            Service::new(config.open()?).sign(&request)?.0
        }
    };
    if json {
        print(&json_line(&signed)?)
    } else {
        print(&format!("{}\n", signed.line()))
    }
}

/// Sends `request` to the agent listening on `socket` and returns what it signed.
fn via_agent(socket: &Path, request: &Request) -> Result<Signed, Failure> {
    let unreachable = |reason: String| Failure::AgentUnreachable {
        socket: socket.to_path_buf(),
        reason,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| unreachable(e.to_string()))?;
    // Whoever listens there gets the request: it must be an agent of this user's (or
    // root's, or the uid P8HSM_AGENT_UID names), not a socket another user put in its way.
    let agent_uid = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| unreachable(e.to_string()))?
        .uid
        .as_raw();
    let trusted = std::env::var("P8HSM_AGENT_UID")
        .ok()
        .and_then(|uid| uid.parse::<u32>().ok());
    if agent_uid != rustix::process::getuid().as_raw()
        && agent_uid != 0
        && Some(agent_uid) != trusted
    {
        return Err(unreachable(format!(
            "it is served by uid {agent_uid}, not by you (set P8HSM_AGENT_UID={agent_uid} if \
             that agent is yours to use)"
        )));
    }
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| unreachable(e.to_string()))?;
    let line = protocol::request_line(&serde_json::Value::from(1), request)?;
    stream
        .write_all(&line)
        .map_err(|e| unreachable(e.to_string()))?;
    // At most one reply line of bounded size: whatever answers there is not trusted.
    let mut reply = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut byte)
            .map_err(|e| unreachable(e.to_string()))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..n]);
        if reply.contains(&b'\n') {
            break;
        }
        if reply.len() > protocol::MAX_REPLY {
            return Err(unreachable(format!(
                "the answer is over {} bytes, which is not the agent's protocol",
                protocol::MAX_REPLY
            )));
        }
    }
    let line = reply.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<Reply>(line) {
        Ok(Reply::Ok { result, .. }) => Ok(result),
        Ok(Reply::Err { error, .. }) => Err(Failure::Agent(error)),
        Err(_) => Err(unreachable(
            "the answer is not the agent's protocol".to_owned(),
        )),
    }
}
