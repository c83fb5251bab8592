//! Transmission parameters (RFC 7252 §4.8), all configurable.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// ACK_TIMEOUT (RFC 7252 §4.8: 2 s).
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR (RFC 7252 §4.8: 1.5).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT (RFC 7252 §4.8: 4).
    pub max_retransmit: u32,
    /// NSTART: outstanding interactions per peer (RFC 7252 §4.7: 1). Requests beyond it queue.
    pub nstart: usize,
    /// Token length for requests this endpoint originates (RFC 9175 §4.2: tokens must not be
    /// reused; random tokens of at least 4 bytes by default).
    pub token_len: usize,
    /// How long a server waits for the application before sending an empty ACK and answering
    /// with a separate response (RFC 7252 §5.2.2).
    pub separate_response_after: Duration,
    /// Upper bound on deduplication entries (bounded memory; RFC 7252 §4.5 asks for
    /// EXCHANGE_LIFETIME, the oldest entries are dropped first when full).
    pub dedup_capacity: usize,
    /// How long a request waits for its response after its CON was acknowledged (or after its
    /// NON was sent) before it fails with a timeout. Observations are exempt once established.
    pub response_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            token_len: 4,
            separate_response_after: Duration::from_millis(1000),
            dedup_capacity: 65_536,
            response_timeout: Duration::from_secs(93),
        }
    }
}

impl Config {
    /// MAX_TRANSMIT_SPAN (RFC 7252 §4.8.2).
    pub fn max_transmit_span(&self) -> Duration {
        self.ack_timeout.mul_f64(((1u64 << self.max_retransmit) - 1) as f64 * self.ack_random_factor)
    }
    /// MAX_TRANSMIT_WAIT (RFC 7252 §4.8.2).
    pub fn max_transmit_wait(&self) -> Duration {
        self.ack_timeout.mul_f64(((1u64 << (self.max_retransmit + 1)) - 1) as f64 * self.ack_random_factor)
    }
    /// EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY (RFC 7252 §4.8.2).
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span() + Duration::from_secs(2 * 100) + self.ack_timeout
    }
    /// NON_LIFETIME = MAX_TRANSMIT_SPAN + MAX_LATENCY (RFC 7252 §4.8.2).
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + Duration::from_secs(100)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_times_match_rfc7252_4_8_2() {
        let c = super::Config::default();
        assert_eq!(c.max_transmit_span().as_secs(), 45);
        assert_eq!(c.max_transmit_wait().as_secs(), 93);
        assert_eq!(c.exchange_lifetime().as_secs(), 247);
        assert_eq!(c.non_lifetime().as_secs(), 145);
    }
}
