//! A running agent and its protocol, for the tests.

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running agent; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `p8hsm agent --foreground` with `hsm`'s environment (or `env`), through
    /// `prefix` (e.g. setpriv), and waits until it listens.
    pub fn start(hsm: &Hsm, env: &[(String, String)], prefix: &[&str], extra: &[&str]) -> Agent {
        let socket = hsm.dir.path().join("run").join("agent.sock");
        Agent::start_at(&socket, env, prefix, extra)
    }

    /// [`Agent::start`] listening on `socket`.
    pub fn start_at(
        socket: &Path,
        env: &[(String, String)],
        prefix: &[&str],
        extra: &[&str],
    ) -> Agent {
        let socket = socket.to_path_buf();
        let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        // Run as another uid (through setpriv), it must be where that uid can reach it.
        args.push(p8hsm_for_others().to_str().unwrap().to_owned());
        args.extend(["agent", "--foreground", "--socket"].map(String::from));
        args.push(socket.to_str().unwrap().to_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut command = Command::new(&args[0]);
        command
            .args(&args[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the agent");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(
            first.starts_with("P8HSM_AGENT_SOCK="),
            "the agent prints its environment: {first:?}; stderr: {}",
            {
                let mut e = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut e);
                e
            }
        );
        Agent { child, socket }
    }

    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect to the agent")
    }

    /// One request on a new connection.
    pub fn request(&self, request: &Value) -> Value {
        let mut stream = self.connect();
        exchange(&mut stream, request)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn exchange(stream: &mut UnixStream, request: &Value) -> Value {
    let mut line = request.to_string();
    line.push('\n');
    // An agent that refuses a peer answers before reading: the write may find it gone.
    let _ = stream.write_all(line.as_bytes());
    read_reply(stream)
}

pub fn read_reply(stream: &mut UnixStream) -> Value {
    let mut reply = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
}
