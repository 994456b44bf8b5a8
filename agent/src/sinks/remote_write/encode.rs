//! Request bodies: protobuf (1.0 or 2.0) then snappy in the *block* format
//! (snap's raw encoder, not the framed stream format the spec forbids).
//! Buffers are reused between requests so that the hot path allocates
//! little.

use std::collections::HashMap;

use prost::Message;

use super::proto::{self, MetadataV2, RequestV2, TimeSeries, TimeSeriesV2};

/// Reusable buffers for encoding requests.
pub struct Encoder {
    raw: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Encoder { raw: Vec::with_capacity(64 * 1024), snappy: snap::raw::Encoder::new() }
    }

    /// Encodes a 1.0 `WriteRequest` of `series` and compresses it into `out`
    /// (cleared first).
    pub fn v1<'a>(&mut self, series: impl Iterator<Item = &'a TimeSeries>, out: &mut Vec<u8>) {
        self.raw.clear();
        for ts in series {
            prost::encoding::message::encode(1, ts, &mut self.raw);
        }
        self.compress(out);
    }

    /// Builds a 1.0 `WriteRequest` from already encoded `TimeSeries`
    /// messages (WAL series entries) and compresses it into `out`.
    pub fn v1_raw<'a>(&mut self, series: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
        use prost::encoding::{encode_key, encode_varint, WireType};
        self.raw.clear();
        for s in series {
            encode_key(1, WireType::LengthDelimited, &mut self.raw);
            encode_varint(s.len() as u64, &mut self.raw);
            self.raw.extend_from_slice(s);
        }
        self.compress(out);
    }

    /// Encodes a 2.0 `Request` (symbols table, metadata type) of `series`
    /// with their 2.0 metric types, and compresses it into `out`.
    pub fn v2<'a>(&mut self, series: impl Iterator<Item = (&'a TimeSeries, u8)>, out: &mut Vec<u8>) {
        let mut symbols: Vec<&'a str> = vec![""];
        let mut index: HashMap<&'a str, u32> = HashMap::new();
        index.insert("", 0);
        let mut timeseries = Vec::new();
        for (ts, kind) in series {
            let mut refs = Vec::with_capacity(ts.labels.len() * 2);
            for l in &ts.labels {
                for s in [l.name.as_str(), l.value.as_str()] {
                    let next = symbols.len() as u32;
                    let r = *index.entry(s).or_insert_with(|| {
                        symbols.push(s);
                        next
                    });
                    refs.push(r);
                }
            }
            timeseries.push(TimeSeriesV2 {
                labels_refs: refs,
                samples: ts.samples.clone(),
                metadata: Some(MetadataV2 { r#type: kind as i32, help_ref: 0, unit_ref: 0 }),
                created_timestamp: 0,
            });
        }
        let req = RequestV2 { symbols: symbols.into_iter().map(str::to_owned).collect(), timeseries };
        self.raw.clear();
        req.encode(&mut self.raw).expect("a Vec grows as needed");
        self.compress(out);
    }

    fn compress(&mut self, out: &mut Vec<u8>) {
        out.clear();
        out.resize(snap::raw::max_compress_len(self.raw.len()), 0);
        // Compressing into a buffer of max_compress_len cannot fail.
        let n = self.snappy.compress(&self.raw, out).expect("snappy output buffer is large enough");
        out.truncate(n);
    }
}

/// Decodes a snappy-compressed 1.0 body (tests and tools).
pub fn decode_v1(body: &[u8]) -> Result<proto::WriteRequest, String> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("snappy: {e}"))?;
    proto::WriteRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

/// Decodes a snappy-compressed 2.0 body (tests and tools).
pub fn decode_v2(body: &[u8]) -> Result<RequestV2, String> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("snappy: {e}"))?;
    RequestV2::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::remote_write::proto::{Label, Sample};

    fn series(name: &str, job: &str, v: f64, ts: i64) -> TimeSeries {
        TimeSeries {
            labels: vec![
                Label { name: "__name__".into(), value: name.into() },
                Label { name: "job".into(), value: job.into() },
            ],
            samples: vec![Sample { value: v, timestamp: ts }],
        }
    }

    #[test]
    fn v1_round_trips_through_snappy_block_format() {
        let s = [series("up", "a", 1.0, 1000), series("up", "b", crate::sample::stale_nan(), 2000)];
        let mut out = Vec::new();
        Encoder::new().v1(s.iter(), &mut out);
        // The block format starts with the uncompressed length as a varint;
        // the framed format would start with the stream identifier 0xff.
        assert_ne!(out[0], 0xff);
        let req = decode_v1(&out).unwrap();
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(req.timeseries[0], s[0]);
        assert_eq!(req.timeseries[1].samples[0].value.to_bits(), crate::sample::STALE_NAN_BITS);
    }

    #[test]
    fn v2_uses_a_symbols_table_starting_with_empty_string() {
        let s = [series("up", "a", 1.0, 1000), series("up", "b", 0.0, 1000)];
        let mut out = Vec::new();
        Encoder::new().v2(s.iter().map(|t| (t, 2)), &mut out);
        let req = decode_v2(&out).unwrap();
        assert_eq!(req.symbols, ["", "__name__", "up", "job", "a", "b"]);
        assert_eq!(req.timeseries[0].labels_refs, [1, 2, 3, 4]);
        assert_eq!(req.timeseries[1].labels_refs, [1, 2, 3, 5]);
        assert_eq!(req.timeseries[1].metadata.unwrap().r#type, 2);
        assert_eq!(req.timeseries[0].samples[0].timestamp, 1000);
        // A 1.0 decoder sees nothing it knows in a 2.0 body.
        assert!(decode_v1(&out).unwrap().timeseries.is_empty());
    }
}
