//! Rate-limiter settings as they arrive from the API or the command line.
//!
//! The JSON shape is the `rate_limiter` object of Firecracker's
//! `PUT`/`PATCH /drives/{id}` body, so existing clients work unchanged:
//!
//! ```json
//! {"bandwidth": {"size": 1048576, "one_time_burst": 0, "refill_time": 1000},
//!  "ops":       {"size": 100, "refill_time": 1000}}
//! ```

use serde::{Deserialize, Serialize};

use super::TokenType;

/// Longest accepted refill period: 2^32 − 1 ms (about 49.7 days).
///
/// Nobody needs a longer period for a disk, and the bound keeps every
/// product in the refill arithmetic (nanoseconds × tokens) inside `u128`,
/// so the math stays exact instead of saturating.
pub const MAX_REFILL_TIME_MS: u64 = u32::MAX as u64;

/// One token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Capacity in tokens (bytes or operations). The bucket refills from
    /// empty to `size` in `refill_time`, so the sustained rate is
    /// `size / refill_time`. Zero means "no limit".
    pub size: u64,
    /// Extra tokens granted once, spent before the bucket and never
    /// refilled (absent or `null` means none).
    #[serde(default)]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket from empty to `size`.
    pub refill_time: u64,
}

impl TokenBucketConfig {
    /// The one-time burst, with "absent" read as zero.
    pub fn burst(&self) -> u64 {
        self.one_time_burst.unwrap_or(0)
    }

    /// Whether this bucket limits anything (a zero size disables it).
    pub fn is_limiting(&self) -> bool {
        self.size != 0
    }

    /// Checks the values; `bucket` names the bucket in the error.
    pub fn validate(&self, bucket: TokenType) -> Result<(), ConfigError> {
        if self.size == 0 {
            // A disabled bucket cannot hand out a burst: there is nothing to
            // exceed, so a non-zero burst signals a client mistake.
            return match self.burst() {
                0 => Ok(()),
                _ => Err(ConfigError::BurstWithoutLimit { bucket }),
            };
        }
        if self.refill_time == 0 {
            return Err(ConfigError::ZeroRefillTime {
                bucket,
                size: self.size,
            });
        }
        if self.refill_time > MAX_REFILL_TIME_MS {
            return Err(ConfigError::RefillTimeTooLong {
                bucket,
                refill_time: self.refill_time,
            });
        }
        Ok(())
    }
}

/// Limits for one disk: bytes and operations, each optional.
///
/// When building a limiter, an absent bucket means "no limit". When
/// updating a live limiter (`PATCH`), an absent bucket means "leave it as
/// it is" and a bucket with `size: 0` removes the limit, as in Firecracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bytes transferred.
    #[serde(default)]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Requests processed.
    #[serde(default)]
    pub ops: Option<TokenBucketConfig>,
}

/// Refill period used by [`RateLimiterConfig::from_rates`].
pub const CLI_REFILL_TIME_MS: u64 = 1000;

impl RateLimiterConfig {
    /// Limits from the compact command-line form
    /// `--disk ...,bw=BYTES_PER_SEC,iops=N`.
    ///
    /// Each rate becomes a bucket of `size = rate` refilled over 1000 ms,
    /// with no one-time burst:
    ///
    /// - With a one-second refill the bucket size *is* the per-second rate,
    ///   so the number the user typed appears unchanged in the config
    ///   (and in a later `GET`), and the sustained rate is exactly it.
    /// - A bucket of one second's worth lets an idle disk absorb up to one
    ///   second of traffic at once — enough that ordinary request sizes
    ///   never have to wait on a busy-but-within-budget disk, while a
    ///   longer-than-a-second overshoot is impossible.
    /// - The command line has no way to ask for a one-time burst, so there
    ///   is none; use the API's full form for that.
    ///
    /// `None` or `Some(0)` leaves that dimension unlimited (`Some(0)`
    /// yields a zero-size bucket, which means "no limit").
    pub fn from_rates(bw_bytes_per_sec: Option<u64>, iops: Option<u64>) -> Self {
        let bucket = |rate: u64| TokenBucketConfig {
            size: rate,
            one_time_burst: None,
            refill_time: CLI_REFILL_TIME_MS,
        };
        Self {
            bandwidth: bw_bytes_per_sec.map(bucket),
            ops: iops.map(bucket),
        }
    }

    /// Checks both buckets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bw) = &self.bandwidth {
            bw.validate(TokenType::Bytes)?;
        }
        if let Some(ops) = &self.ops {
            ops.validate(TokenType::Ops)?;
        }
        Ok(())
    }
}

/// A rejected rate-limiter setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limiting bucket needs time to refill in.
    #[error("{bucket} bucket: refill_time must be positive for size {size}")]
    ZeroRefillTime {
        /// Which bucket.
        bucket: TokenType,
        /// Its size.
        size: u64,
    },
    /// The refill period is beyond [`MAX_REFILL_TIME_MS`].
    #[error("{bucket} bucket: refill_time {refill_time} ms exceeds the maximum of {MAX_REFILL_TIME_MS} ms")]
    RefillTimeTooLong {
        /// Which bucket.
        bucket: TokenType,
        /// The rejected period.
        refill_time: u64,
    },
    /// A burst was given for a bucket that limits nothing.
    #[error("{bucket} bucket: one_time_burst needs a non-zero size")]
    BurstWithoutLimit {
        /// Which bucket.
        bucket: TokenType,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_firecracker_patch_body() {
        let json = r#"{"bandwidth": {"size": 1048576, "one_time_burst": 4096, "refill_time": 1000},
                       "ops": {"size": 100, "refill_time": 500}}"#;
        let cfg: RateLimiterConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            cfg.bandwidth,
            Some(TokenBucketConfig {
                size: 1 << 20,
                one_time_burst: Some(4096),
                refill_time: 1000
            })
        );
        assert_eq!(cfg.ops.unwrap().burst(), 0);
        assert_eq!(cfg.validate(), Ok(()));

        let only_ops: RateLimiterConfig = serde_json::from_str(
            r#"{"ops": {"size": 1, "one_time_burst": null, "refill_time": 1}}"#,
        )
        .unwrap();
        assert_eq!(only_ops.bandwidth, None);
    }

    #[test]
    fn unknown_or_missing_fields_are_rejected() {
        for bad in [
            r#"{"bandwith": {"size": 1, "refill_time": 1}}"#,
            r#"{"ops": {"size": 1, "refill_time": 1, "burst": 3}}"#,
            r#"{"ops": {"size": 1}}"#,
            r#"{"ops": {"size": -1, "refill_time": 1}}"#,
        ] {
            assert!(
                serde_json::from_str::<RateLimiterConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_errors_name_the_bucket() {
        let bucket = |size, burst, refill_time| TokenBucketConfig {
            size,
            one_time_burst: burst,
            refill_time,
        };
        let zero_refill = RateLimiterConfig {
            bandwidth: Some(bucket(10, None, 0)),
            ops: None,
        };
        assert_eq!(
            zero_refill.validate(),
            Err(ConfigError::ZeroRefillTime {
                bucket: TokenType::Bytes,
                size: 10
            })
        );
        let long = RateLimiterConfig {
            bandwidth: None,
            ops: Some(bucket(1, None, MAX_REFILL_TIME_MS + 1)),
        };
        assert!(matches!(
            long.validate(),
            Err(ConfigError::RefillTimeTooLong {
                bucket: TokenType::Ops,
                ..
            })
        ));
        let burst_only = RateLimiterConfig {
            bandwidth: None,
            ops: Some(bucket(0, Some(5), 1000)),
        };
        assert_eq!(
            burst_only.validate(),
            Err(ConfigError::BurstWithoutLimit {
                bucket: TokenType::Ops
            })
        );
        // A zero-size bucket is "no limit", whatever its refill time.
        let disabled = RateLimiterConfig {
            bandwidth: Some(bucket(0, Some(0), 0)),
            ops: Some(bucket(u64::MAX, Some(u64::MAX), MAX_REFILL_TIME_MS)),
        };
        assert_eq!(disabled.validate(), Ok(()));
        assert!(ConfigError::ZeroRefillTime {
            bucket: TokenType::Bytes,
            size: 1
        }
        .to_string()
        .starts_with("bandwidth bucket"));
    }

    #[test]
    fn cli_rates_become_one_second_buckets() {
        let cfg = RateLimiterConfig::from_rates(Some(10 << 20), Some(0));
        assert_eq!(
            cfg.bandwidth,
            Some(TokenBucketConfig {
                size: 10 << 20,
                one_time_burst: None,
                refill_time: 1000
            })
        );
        assert!(!cfg.ops.unwrap().is_limiting());
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(
            RateLimiterConfig::from_rates(None, None),
            RateLimiterConfig::default()
        );
    }
}
