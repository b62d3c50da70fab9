//! Where the user PIN comes from: a file, an environment variable, a prompt on a
//! terminal, or — with a warning — a PKCS#11 URI's `pin-value`. Never a command-line
//! argument of its own.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::failure::Failure;
use crate::input;

/// The most a PIN file may hold.
const MAX_PIN_FILE_BYTES: usize = 4096;

/// A PIN source: `file:PATH`, `env:VAR` or `prompt` — or a PIN already in memory, as a
/// PKCS#11 URI's `pin-value` gives it.
#[derive(Debug, Clone)]
pub enum PinSource {
    /// A regular file holding the PIN, optionally followed by one newline (`\n` or
    /// `\r\n`). Nothing else is trimmed: other white space is part of the PIN.
    File(PathBuf),
    /// An environment variable, taken as it is.
    Env(String),
    /// Asked on the terminal, without echo.
    Prompt,
    /// A PIN already held in a secret type (a URI's `pin-value`).
    Value(SecretString),
}

impl FromStr for PinSource {
    type Err = Failure;

    fn from_str(s: &str) -> Result<Self, Failure> {
        if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(PinSource::File(PathBuf::from(path)))
        } else if let Some(var) = s.strip_prefix("env:").filter(|v| !v.is_empty()) {
            Ok(PinSource::Env(var.to_owned()))
        } else if s == "prompt" {
            Ok(PinSource::Prompt)
        } else {
            // The value is not echoed: it may be a PIN typed in the wrong place.
            Err(Failure::PinSource(
                "the PIN source is not file:PATH, env:VAR or prompt".to_owned(),
            ))
        }
    }
}

impl PinSource {
    /// Reads the PIN for the token labelled `token_label` (the prompt names it).
    pub fn read(&self, token_label: &str) -> Result<SecretString, Failure> {
        let failed = |reason: String| Failure::PinSource(reason);
        let pin = match self {
            PinSource::File(path) => read_file(path)?,
            PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| {
                failed(format!(
                    "environment variable {var} is not set or not UTF-8"
                ))
            })?),
            PinSource::Value(pin) => Zeroizing::new(pin.expose_secret().to_owned()),
            PinSource::Prompt => {
                if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                    return Err(failed(
                        "prompt needs a terminal, and there is none".to_owned(),
                    ));
                }
                Zeroizing::new(
                    rpassword::prompt_password(format!("User PIN for token \"{token_label}\": "))
                        .map_err(|e| failed(format!("cannot read from the terminal: {e}")))?,
                )
            }
        };
        if pin.is_empty() {
            return Err(failed(format!("{} gave an empty PIN", self.describe())));
        }
        Ok(SecretString::from(pin.as_str()))
    }

    fn describe(&self) -> String {
        match self {
            PinSource::File(path) => format!("file {}", path.display()),
            PinSource::Env(var) => format!("environment variable {var}"),
            PinSource::Prompt => "the prompt".to_owned(),
            PinSource::Value(_) => "the URI's pin-value".to_owned(),
        }
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<String>, Failure> {
    let unreadable = |reason: String| {
        Failure::PinSource(format!("cannot read PIN file {}: {reason}", path.display()))
    };
    let file = input::open_regular(path).map_err(|e| unreadable(e.to_string()))?;
    let bytes = input::read_fd(&file, MAX_PIN_FILE_BYTES).map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() > MAX_PIN_FILE_BYTES {
        return Err(Failure::PinSource(format!(
            "PIN file {} is larger than a PIN",
            path.display()
        )));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Failure::PinSource(format!("PIN file {} is not UTF-8", path.display())))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains('\n') {
        return Err(Failure::PinSource(format!(
            "PIN file {} holds more than one line",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;

    #[test]
    fn parses_the_three_sources_and_nothing_else() {
        assert!(
            matches!("file:/run/pin".parse(), Ok(PinSource::File(p)) if p == Path::new("/run/pin"))
        );
        assert!(matches!("env:MY_PIN".parse(), Ok(PinSource::Env(v)) if v == "MY_PIN"));
        assert!(matches!("prompt".parse(), Ok(PinSource::Prompt)));
        for bad in ["1234", "pin:1234", "file:", "env:", ""] {
            assert!(bad.parse::<PinSource>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_pin_drops_one_trailing_newline_and_nothing_else() {
        for (content, pin) in [(&b"1234\r\n"[..], "1234"), (b" 12 34 \n", " 12 34 ")] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(content).unwrap();
            let read = PinSource::File(f.path().into()).read("t").unwrap();
            assert_eq!(read.expose_secret(), pin);
        }
    }

    #[test]
    fn empty_and_multi_line_pin_files_are_refused() {
        for content in [&b""[..], b"\n", b"12\n34\n"] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(content).unwrap();
            assert!(matches!(
                PinSource::File(f.path().into()).read("t"),
                Err(Failure::PinSource(_))
            ));
        }
    }

    #[test]
    fn pin_source_error_does_not_echo_a_pin_given_by_mistake() {
        let Err(Failure::PinSource(err)) = "12345678".parse::<PinSource>() else {
            panic!("accepted")
        };
        assert!(err.contains("not file:PATH"), "{err}");
        assert!(!err.contains("12345678"), "{err}");
    }
}
