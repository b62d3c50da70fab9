//! What the long-lived front ends (the agent and the service) share: their lines — one
//! audit line per token handed out, naming who asked, and events (listening, refused
//! peers, stopping), as text or JSON, to stderr or an audit log; never the PIN, the whole
//! token only with `--audit-tokens` — and their hardening (non-dumpable).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use p8hsm::apple::cache::Source;
use p8hsm::pipeline::{Outcome, Record};
use p8hsm::Signed;

use crate::failure::Failure;
use serde::{Deserialize, Serialize};

/// How the lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `time event key=value …`
    Text,
    /// One JSON object a line.
    Json,
}

/// Where the lines go and how they look.
pub struct Audit {
    sink: Sink,
    format: LogFormat,
    tokens: bool,
    refusals: Mutex<HashMap<String, Refusals>>,
}

/// Where the lines go.
enum Sink {
    Stderr,
    /// The audit log, and the path it is opened again from.
    File {
        path: PathBuf,
        file: Mutex<File>,
    },
}

/// Refusal lines are written in bursts of at most [`REFUSAL_BURST`], then one every
/// [`REFUSAL_INTERVAL`] seconds; those left out are counted, and the count goes with the
/// next line written (`left_out=N`). A refusal line holds at most 8 certificate names of
/// 128 characters (see `CertNames::shown`) and fields of at most 1,200, under 2.5 KB:
/// each client the CA issued a certificate to grows the log by at most about 250 bytes a
/// second (22 MB a day).
pub const REFUSAL_BURST: u64 = 10;
/// See [`REFUSAL_BURST`].
pub const REFUSAL_INTERVAL: u64 = 10;
/// How many refusing clients have a pace of their own; past that, the others share one.
const REFUSING: usize = 4096;

/// The refusal lines' pace (a generic cell rate: when the next line is due), and the
/// ones left out.
#[derive(Default)]
struct Refusals {
    due: u64,
    left_out: u64,
}

impl Audit {
    /// Lines to stderr, or to `log` (a path, opened with [`open_log`]).
    pub fn new(log: Option<&Path>, format: LogFormat, tokens: bool) -> io::Result<Audit> {
        let sink = match log {
            Some(path) => {
                let file = open_log(path)?;
                let mode = file.metadata()?.mode() & 0o777;
                if tokens && mode & 0o004 != 0 {
                    // Whole tokens are bearer credentials: not for everyone to read.
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "it is readable by everyone (mode {mode:04o}), and --audit-tokens \
                             writes whole tokens to it: chmod o-r it first"
                        ),
                    ));
                }
                Sink::File {
                    file: Mutex::new(file),
                    path: path.to_path_buf(),
                }
            }
            None => Sink::Stderr,
        };
        Ok(Audit {
            sink,
            format,
            tokens,
            refusals: Mutex::new(HashMap::new()),
        })
    }

    /// Opens the audit log again (after logrotate renamed it), keeping the one open
    /// until the new one is: lines go on being written, to one or the other.
    pub fn reopen(&self) -> io::Result<()> {
        match &self.sink {
            Sink::Stderr => Ok(()),
            Sink::File { path, file } => {
                let reopened = open_log(path)?;
                *file.lock().unwrap_or_else(|p| p.into_inner()) = reopened;
                Ok(())
            }
        }
    }

    /// [`Audit::reopen`] on SIGHUP, with its event line (in the log it opened, or in the
    /// one it keeps when it could not).
    pub fn reopened(&self) {
        match self.reopen() {
            Ok(()) => self.event("log-reopened", &[]),
            Err(e) => {
                eprintln!(
                    "error: cannot open the audit log again: {e}; lines go on to the one open"
                );
                self.event("log-reopen-failed", &[("reason", e.to_string())]);
            }
        }
    }

    /// Whether lines can go where they are written: not to an audit log that was deleted.
    pub fn writable(&self) -> bool {
        match &self.sink {
            Sink::Stderr => true,
            Sink::File { file, .. } => file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .metadata()
                .is_ok_and(|m| m.nlink() > 0),
        }
    }

    /// Writes what the pipeline decided, with what only the transport knows (`peer`:
    /// a uid and pid, or a certificate's address), and returns the result to reply
    /// with: a token whose audit line cannot be written is not handed out; a refusal is
    /// written at a bounded pace (see [`Audit::refused`]).
    pub fn settle(
        &self,
        outcome: Outcome<Failure>,
        peer: &[(&'static str, String)],
    ) -> Result<(Signed, Source), Failure> {
        let Outcome { result, record } = outcome;
        match (record, &result) {
            (Some(Record::Signed { mut fields }), Ok((signed, _))) => {
                fields.extend(peer.iter().cloned());
                if self.tokens {
                    fields.push(("token", signed.line().to_owned()));
                }
                self.write("sign", &fields).map_err(Failure::AuditFailed)?;
            }
            (Some(Record::Refused { who, mut fields }), _) => {
                fields.extend(peer.iter().cloned());
                self.refused(&who, &fields);
            }
            _ => {}
        }
        result
    }

    /// An event line; a failure to write it is not the caller's concern.
    pub fn event(&self, event: &str, fields: &[(&str, String)]) {
        let _ = self.write(event, fields);
    }

    /// A `refused` line for `who` (a caller, or a certificate's names), at the pace
    /// [`REFUSAL_BURST`] says for each `who`: one over it is counted, and the count
    /// (`left_out=N`) goes with that `who`'s next line (or [`Audit::left_out`]'s), so
    /// that one client's flood hides no other's refusals.
    pub fn refused(&self, who: &str, fields: &[(&str, String)]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let admitted = {
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if refusals.len() >= REFUSING && !refusals.contains_key(who) {
                // Forget those with nothing to say that may write again at once.
                refusals.retain(|_, r| r.left_out > 0 || r.due > now);
            }
            // Past that many, the others share one pace.
            let who = if refusals.len() >= REFUSING && !refusals.contains_key(who) {
                "others"
            } else {
                who
            };
            refusals.entry(who.to_owned()).or_default().admit(now)
        };
        let Some(left_out) = admitted else {
            return;
        };
        let mut fields: Vec<(&str, String)> = fields
            .iter()
            .map(|(name, value)| (*name, bounded(value, REFUSAL_FIELD)))
            .collect();
        if left_out > 0 {
            fields.push(("left_out", left_out.to_string()));
        }
        self.event("refused", &fields);
    }

    /// The refusals left out and not yet counted in a line: one `refused-left-out` line
    /// for each `who` with some (at shutdown).
    pub fn left_out(&self) {
        let counts: Vec<(String, u64)> = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .filter(|(_, r)| r.left_out > 0)
            .map(|(who, r)| (who.clone(), std::mem::take(&mut r.left_out)))
            .collect();
        for (who, count) in counts {
            self.event(
                "refused-left-out",
                &[
                    ("who", bounded(&who, REFUSAL_FIELD)),
                    ("left_out", count.to_string()),
                ],
            );
        }
    }

    /// One line, written whole with one write(2) call or not at all (a short write, as on
    /// a full disk, is cut off again). A line is never written to an audit log that was
    /// deleted: the token it records is not handed out.
    fn write(&self, event: &str, fields: &[(&str, String)]) -> io::Result<()> {
        let line = self.line(event, fields);
        let Sink::File { file, .. } = &self.sink else {
            return io::stderr().lock().write_all(line.as_bytes());
        };
        let file = file.lock().unwrap_or_else(|p| p.into_inner());
        if file.metadata()?.nlink() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the audit log was deleted; send SIGHUP to open it again",
            ));
        }
        let written = (&*file).write(line.as_bytes())?;
        if written < line.len() {
            // Only this process writes the log, and only under this lock: the last
            // `written` bytes are this line's.
            let end = file.metadata()?.len();
            let _ = file.set_len(end.saturating_sub(written as u64));
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the audit log has no room for a whole line",
            ));
        }
        Ok(())
    }

    /// A line in the chosen format, with its newline.
    fn line(&self, event: &str, fields: &[(&str, String)]) -> String {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut line = match self.format {
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("time".into(), serde_json::json!(time));
                object.insert("event".into(), event.into());
                for (k, v) in fields {
                    object.insert((*k).into(), v.clone().into());
                }
                serde_json::Value::Object(object).to_string()
            }
            LogFormat::Text => {
                let mut text = format!("{time:.3} {event}");
                for (k, v) in fields {
                    text.push(' ');
                    text.push_str(k);
                    text.push('=');
                    push_value(&mut text, v);
                }
                text
            }
        };
        line.push('\n');
        line
    }
}

/// A text line's value: as it is when it is printable ASCII without a space, `=` or
/// quote, else in double quotes with `"`, `\\` and anything unprintable escaped — so
/// that a value (a certificate's name, say) can never pose as another field.
fn push_value(text: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && !b"\\'\"=".contains(&b));
    if plain {
        text.push_str(value);
    } else {
        text.push('"');
        let _ = write!(text, "{}", value.escape_default());
        text.push('"');
    }
}

impl Refusals {
    /// Whether a refusal line may be written at `now` (seconds), with how many were left
    /// out before it.
    fn admit(&mut self, now: u64) -> Option<u64> {
        let due = self.due.max(now);
        if due - now > (REFUSAL_BURST - 1) * REFUSAL_INTERVAL {
            self.left_out += 1;
            return None;
        }
        self.due = due + REFUSAL_INTERVAL;
        Some(std::mem::take(&mut self.left_out))
    }
}

/// `text` cut to `max` characters, marked `...` when cut: for values a client chose.
pub fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// The most characters of one field of a refusal line (values a client chose).
const REFUSAL_FIELD: usize = 1200;

/// Opens a log for appending: created with mode 0600, only ever a regular file (a
/// FIFO would block every write), never through a symbolic link.
pub fn open_log(path: &Path) -> io::Result<File> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(not_regular());
    }
    // Never through a symbolic link: in a shared directory another user could point
    // it at a file of the process's user, which it would then append to.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW).bits() as i32)
        .open(path)?;
    // The path may have changed in between: the opened file is what counts.
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Marks this process non-dumpable: no core file, no ptrace by other processes of the
/// same uid, and /proc/PID/mem readable only by root. Long-lived front ends hold the PIN.
pub fn not_dumpable() {
    // Failing leaves the process as it was; nothing better can be done.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text line's fields, read as a log reader would: split at spaces outside quotes.
    fn fields(line: &str) -> Vec<String> {
        let (mut fields, mut field, mut quoted, mut escaped) =
            (vec![], String::new(), false, false);
        for c in line.trim_end().chars() {
            match c {
                _ if escaped => {
                    field.push(c);
                    escaped = false;
                }
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ' ' if !quoted => fields.push(std::mem::take(&mut field)),
                _ => field.push(c),
            }
        }
        fields.push(field);
        fields
    }

    #[test]
    fn a_value_cannot_pose_as_another_field() {
        let audit = Audit::new(None, LogFormat::Text, false).unwrap();
        let forged = "x caller=cn:billing-service \"a\\\" b=c";
        let line = audit.line(
            "refused",
            &[
                ("names", forged.to_owned()),
                ("kind", "token connect".to_owned()),
                ("empty", String::new()),
            ],
        );
        let fields = fields(&line);
        assert_eq!(fields.len(), 5, "{line}");
        assert_eq!(fields[2], format!("names={forged}"), "{line}");
        assert_eq!(fields[3], "kind=token connect", "{line}");
        assert_eq!(fields[4], "empty=", "{line}");
        assert!(line.contains(" kind=\"token connect\""), "{line}");
        // Plain values stay as they are.
        let line = audit.line("sign", &[("key_id", "2X9R4HXF34".to_owned())]);
        assert!(line.ends_with(" sign key_id=2X9R4HXF34\n"), "{line}");
    }

    #[test]
    fn refusals_are_written_at_a_bounded_rate_and_the_rest_counted() {
        let mut refusals = Refusals::default();
        let burst: Vec<Option<u64>> = (0..25).map(|_| refusals.admit(100)).collect();
        assert_eq!(burst.iter().flatten().count(), REFUSAL_BURST as usize);
        assert!(burst[REFUSAL_BURST as usize..].iter().all(Option::is_none));
        // Then one every REFUSAL_INTERVAL seconds, carrying the count of those left out.
        assert_eq!(refusals.admit(105), None);
        assert_eq!(refusals.admit(110), Some(16));
        assert_eq!(refusals.admit(111), None);
        assert_eq!(refusals.admit(120), Some(1));
        // A flood for an hour: one line every 10 s.
        let written = (121..3721).filter(|&t| refusals.admit(t).is_some()).count();
        assert_eq!(written, 360);
        // A quiet spell refills the burst.
        let later: Vec<Option<u64>> = (0..10).map(|_| refusals.admit(9_000)).collect();
        assert!(later.iter().all(Option::is_some), "{later:?}");
    }

    #[test]
    fn one_clients_flood_hides_no_other_clients_refusals_and_no_count_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::new(Some(&path), LogFormat::Text, false).unwrap();
        for _ in 0..50 {
            audit.refused("cn:flooder", &[("reason", "x".repeat(100_000))]);
        }
        for n in 0..3 {
            audit.refused("cn:prober", &[("reason", format!("probe-{n}"))]);
        }
        audit.left_out();
        let log = std::fs::read_to_string(&path).unwrap();
        for n in 0..3 {
            assert!(log.contains(&format!("reason=probe-{n}")), "{log}");
        }
        assert_eq!(log.matches(" refused ").count(), REFUSAL_BURST as usize + 3);
        assert!(
            log.contains("refused-left-out who=cn:flooder left_out=40"),
            "{log}"
        );
        // A value the client chose is cut.
        assert!(log.lines().all(|line| line.len() < 1400), "{log}");
    }

    #[test]
    fn a_deleted_audit_log_takes_no_line_until_it_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::new(Some(&path), LogFormat::Text, false).unwrap();
        audit.write("one", &[]).unwrap();
        // logrotate renames the log: lines go on to the renamed file until SIGHUP.
        let rotated = dir.path().join("audit.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        audit.write("two", &[]).unwrap();
        audit.reopen().unwrap();
        audit.write("three", &[]).unwrap();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.contains(" one") && old.contains(" two") && !old.contains("three"),
            "{old}"
        );
        assert!(new.contains(" three") && !new.contains(" two"), "{new}");
        // Deleted: refused, so the token it would record is not handed out.
        std::fs::remove_file(&path).unwrap();
        let refused = audit.write("four", &[]).unwrap_err();
        assert!(refused.to_string().contains("deleted"), "{refused}");
        audit.reopen().unwrap();
        audit.write("five", &[]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(" five"));
    }
}
