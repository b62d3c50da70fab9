//! When a token starts and ends.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// When a token starts and ends: `iat = now - skew`, `exp = now + ttl`.
///
/// The default is 10 minutes from now with `iat` backdated 60 s, so a signer whose
/// clock runs a little ahead of Apple's still gets accepted. Each kind's
/// [`LifetimeRule`](super::spec::LifetimeRule) gives its own default TTL and limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lifetime {
    /// Seconds from now until `exp`.
    pub ttl: u64,
    /// Seconds `iat` is backdated.
    pub skew: u64,
}

impl Default for Lifetime {
    fn default() -> Self {
        Lifetime { ttl: 600, skew: 60 }
    }
}

/// A token's `iat` and `exp`, UNIX seconds. For kinds without an `exp` claim (APNs,
/// DeviceCheck), `exp` is when Apple stops accepting the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Issued at.
    pub iat: u64,
    /// Expires at.
    pub exp: u64,
}

impl Lifetime {
    /// The times for a token signed at `now`, refusing a lifetime whose `exp - iat`
    /// exceeds `limit` seconds: never shortened silently.
    pub fn times(&self, now: SystemTime, api: &'static str, limit: u64) -> Result<Times, Error> {
        if self.ttl == 0 {
            return Err(Error::LifetimeZero);
        }
        if self.ttl.saturating_add(self.skew) > limit {
            return Err(Error::LifetimeTooLong {
                api,
                ttl: self.ttl,
                skew: self.skew,
                limit,
            });
        }
        // A sane clock is far past any skew a lifetime limit allows.
        let iat = unix(now)?.saturating_sub(self.skew);
        Ok(Times {
            iat,
            exp: iat + self.skew + self.ttl,
        })
    }
}

/// The UNIX times a clock may read for p8hsm to sign, and for `p8hsm doctor` to pass:
/// from September 2020 (before any p8hsm) to the year 2100. A clock outside them is
/// wrong, and a token signed by it would be rejected or, worse, accepted long after.
pub const SANE_CLOCK: std::ops::Range<u64> = 1_600_000_000..4_102_444_800;

/// `now` in seconds since the UNIX epoch, when it is within [`SANE_CLOCK`].
pub fn clock(now: SystemTime) -> Result<u64, Error> {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) if SANE_CLOCK.contains(&d.as_secs()) => Ok(d.as_secs()),
        Ok(d) => Err(Error::Clock {
            reading: format!("{} (UNIX seconds)", d.as_secs()),
        }),
        Err(e) => Err(Error::Clock {
            reading: format!("{} s before 1970", e.duration().as_secs()),
        }),
    }
}

/// Seconds since the UNIX epoch, from a sane clock.
pub(crate) fn unix(now: SystemTime) -> Result<u64, Error> {
    clock(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, NOW};

    #[test]
    fn an_absurd_clock_signs_nothing() {
        use std::time::Duration;
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        for absurd in [0, 978_307_200, 4_890_000_000] {
            // 1970, 2001 and 2125
            let e = Lifetime::default()
                .times(at(absurd), "x", 1200)
                .unwrap_err();
            assert!(matches!(e, Error::Clock { .. }), "{e}");
        }
        let before_1970 = UNIX_EPOCH - Duration::from_secs(10);
        assert!(clock(before_1970)
            .unwrap_err()
            .to_string()
            .contains("10 s before 1970"));
        assert!(clock(at(1_800_000_000)).is_ok());
    }

    #[test]
    fn default_lifetime_is_ten_minutes_backdated_a_minute() {
        let t = Lifetime::default().times(now(), "x", 1200).unwrap();
        assert_eq!(
            t,
            Times {
                iat: NOW - 60,
                exp: NOW + 600
            }
        );
    }

    #[test]
    fn lifetime_over_the_limit_is_an_error_not_a_silent_change() {
        let at_limit = Lifetime {
            ttl: 1140,
            skew: 60,
        };
        let times = at_limit.times(now(), "x", 1200).unwrap();
        assert_eq!(times.exp - times.iat, 1200);
        let over = Lifetime {
            ttl: 1141,
            skew: 60,
        };
        assert!(matches!(
            over.times(now(), "x", 1200),
            Err(Error::LifetimeTooLong { limit: 1200, .. })
        ));
        let zero = Lifetime { ttl: 0, skew: 60 };
        assert!(matches!(
            zero.times(now(), "x", 1200),
            Err(Error::LifetimeZero)
        ));
    }
}
