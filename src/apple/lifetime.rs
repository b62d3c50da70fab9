//! When a token starts and ends.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// When a token starts and ends: `iat = now - skew`, `exp = now + ttl`.
///
/// The default is 10 minutes from now with `iat` backdated 60 s, so a signer whose
/// clock runs a little ahead of Apple's still gets accepted. Each kind's
/// [`spec::LifetimeRule`] gives its own default TTL and limit.
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
        let iat = unix(now)?.checked_sub(self.skew).ok_or(Error::Clock)?;
        Ok(Times {
            iat,
            exp: iat + self.skew + self.ttl,
        })
    }
}

/// Seconds since the UNIX epoch.
pub(crate) fn unix(now: SystemTime) -> Result<u64, Error> {
    Ok(now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::Clock)?
        .as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::tests::{now, NOW};

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
