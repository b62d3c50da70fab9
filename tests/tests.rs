//! The integration tests, as one test binary: each
//! module drives the real `p8hsm` binary, or the library, against real tokens — a
//! SoftHSM token store per test (or Kryoptic with `P8HSM_TEST_KRYOPTIC=<module>`).
//! `custody` and `stress` are binaries of their own: they re-execute themselves.

mod common;

mod agent;
mod attack;
mod attributes;
mod backup;
mod catalogue;
mod docs;
mod doctor;
mod errors;
mod examples;
mod hygiene;
mod import;
mod keygen;
mod kinds;
mod parity;
mod recovery;
mod renew;
mod serve;
mod softhsm;
mod threads;
mod token;
mod tokens;
mod uri;
