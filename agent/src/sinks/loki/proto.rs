//! Loki's push protocol (`logproto.PushRequest` in grafana/loki's
//! pkg/push/push.proto), written out for prost. Field numbers are the
//! protocol's; the message names follow Loki's.

/// `logproto.PushRequest`: the body of POST /loki/api/v1/push (before snappy).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream, its labels in selector form.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// `{name="value", ...}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Filled in by Loki's distributor; clients leave it zero.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: one line and its time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Splits Unix nanoseconds into seconds and nanoseconds (nanos never negative).
    pub fn from_nanos(ns: i64) -> Timestamp {
        Timestamp { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn wire_bytes_match_the_field_numbers() {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: "{a=\"b\"}".into(),
                entries: vec![EntryAdapter { timestamp: Some(Timestamp { seconds: 1, nanos: 2 }), line: "x".into() }],
                hash: 0,
            }],
        };
        let bytes = req.encode_to_vec();
        // streams(1, len) { labels(1, len) "{a=\"b\"}", entries(2, len) { ts(1) {1:1, 2:2}, line(2) "x" } }
        let labels = b"{a=\"b\"}";
        let mut want = vec![0x0a, 0];
        want.extend([0x0a, labels.len() as u8]);
        want.extend(labels);
        want.extend([0x12, 9, 0x0a, 4, 0x08, 1, 0x10, 2, 0x12, 1, b'x']);
        want[1] = (want.len() - 2) as u8;
        assert_eq!(bytes, want);
        assert_eq!(Timestamp::from_nanos(-1), Timestamp { seconds: -1, nanos: 999_999_999 });
    }
}
