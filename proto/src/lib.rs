//! Generated code for kiln's gRPC protocol. The protocol itself, with its
//! rules, is documented in `proto/kiln/v1/*.proto`.

pub mod v1 {
    tonic::include_proto!("kiln.v1");
}

/// Request metadata key that carries the agent's id on every agent call.
pub const AGENT_ID_METADATA: &str = "kiln-agent-id";

/// Converts between `SystemTime` and the protobuf timestamp.
pub mod time {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn to_proto(t: SystemTime) -> prost_types::Timestamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
    }

    pub fn from_proto(t: &prost_types::Timestamp) -> SystemTime {
        UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
    }

    /// Milliseconds since the epoch, the unit the store keeps.
    pub fn millis_to_proto(ms: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
    }

    pub fn proto_to_millis(t: &prost_types::Timestamp) -> i64 {
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    }
}
