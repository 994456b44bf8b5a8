//! The remote_write wire messages, written by hand with prost derives (no
//! protoc): `prometheus.WriteRequest` (protocol 1.0, prompb/remote.proto and
//! prompb/types.proto) and `io.prometheus.write.v2.Request` (protocol 2.0,
//! prompb/io/prometheus/write/v2/types.proto). Field numbers follow those files.
//! The WAL's own record message reuses the 1.0 series type.

/// `prometheus.WriteRequest`: field 1 holds the series; 2 and 3 are
/// reserved (Cortex source, metadata) and never sent here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples oldest first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample` (and, with the same field numbers, the 2.0 Sample).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Request`: fields 1..3 are reserved so that a 1.0
/// receiver decodes a 2.0 body as an empty request instead of garbage.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestV2 {
    /// Every string of the request once; index 0 is always "".
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeriesV2>,
}

/// `io.prometheus.write.v2.TimeSeries` without histograms and exemplars,
/// which Vantage does not produce.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeriesV2 {
    /// Pairs of indexes into `symbols`: name, value, name, value ...
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<MetadataV2>,
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct MetadataV2 {
    /// `Metadata.MetricType`: 0 unspecified, 1 counter, 2 gauge, 3 histogram,
    /// 4 gauge histogram, 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// One WAL record: the series of one accepted batch after relabeling and
/// external labels, with each series' metric type (one byte per series,
/// [`crate::sample::MetricType`] as the 2.0 `MetricType` number).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalRecord {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<TimeSeries>,
    #[prost(bytes = "vec", tag = "2")]
    pub kinds: Vec<u8>,
}

/// The 2.0 `MetricType` number of a sample model type.
pub fn metric_type_v2(kind: crate::sample::MetricType) -> u8 {
    use crate::sample::MetricType::*;
    match kind {
        Untyped => 0,
        Counter => 1,
        Gauge => 2,
        Histogram => 3,
        GaugeHistogram => 4,
        Summary => 5,
        Info => 6,
        StateSet => 7,
    }
}

/// One series of a WAL record kept as its encoded bytes: a WAL series entry
/// is exactly a 1.0 `TimeSeries` message, so a 1.0 request is these bytes
/// framed, with no decoding and no allocation per label.
#[derive(Clone, Debug)]
pub struct RawSeries {
    /// The encoded `TimeSeries` message.
    pub bytes: bytes::Bytes,
    /// Hash of its labels ([`crate::sinks::remote_write::series_hash`]).
    pub hash: u64,
    pub samples: u32,
    /// Newest sample timestamp.
    pub max_ts: i64,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// Walks the fields of one message: calls `f(tag, wire_type, payload)`
/// with the payload of length-delimited fields and the value of varints.
fn fields(buf: &[u8], mut f: impl FnMut(u64, u64, &[u8], u64) -> Result<(), String>) -> Result<(), String> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (tag, wt) = (key >> 3, key & 7);
        match wt {
            0 => {
                let v = varint(buf, &mut pos)?;
                f(tag, wt, &[], v)?;
            }
            1 => pos += 8,
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len()).ok_or("truncated field")?;
                f(tag, wt, &buf[pos..end], 0)?;
                pos = end;
            }
            5 => pos += 4,
            _ => return Err(format!("unsupported wire type {wt}")),
        }
    }
    if pos > buf.len() {
        return Err("truncated fixed-size field".into());
    }
    Ok(())
}

/// Splits an encoded [`WalRecord`] into its series (sharing `body`'s
/// memory) and the metric type bytes.
pub fn split_record(body: &bytes::Bytes) -> Result<(Vec<RawSeries>, Vec<u8>), String> {
    let mut series = Vec::new();
    let mut kinds = Vec::new();
    let base = body.as_ptr() as usize;
    fields(body, |tag, wt, payload, _| {
        match (tag, wt) {
            (1, 2) => {
                let mut h = crate::hash::Fnv1a::new();
                let (mut samples, mut max_ts) = (0u32, i64::MIN);
                fields(payload, |tag, wt, inner, _| {
                    match (tag, wt) {
                        (1, 2) => fields(inner, |t, w, s, _| {
                            if w == 2 && (t == 1 || t == 2) {
                                h.write(s);
                                h.write_u8(0xff);
                            }
                            Ok(())
                        })?,
                        (2, 2) => {
                            samples += 1;
                            let mut ts = 0i64;
                            fields(inner, |t, w, _, v| {
                                if t == 2 && w == 0 {
                                    ts = v as i64;
                                }
                                Ok(())
                            })?;
                            max_ts = max_ts.max(ts);
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                let start = payload.as_ptr() as usize - base;
                series.push(RawSeries {
                    bytes: body.slice(start..start + payload.len()),
                    hash: h.finish(),
                    samples,
                    max_ts,
                });
            }
            (2, 2) => kinds.extend_from_slice(payload),
            _ => {}
        }
        Ok(())
    })?;
    Ok((series, kinds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn split_record_matches_prost_and_the_label_hash() {
        let ts = |name: &str, v: f64, t: i64| TimeSeries {
            labels: vec![
                Label { name: "__name__".into(), value: name.into() },
                Label { name: "job".into(), value: "node".into() },
            ],
            samples: vec![Sample { value: v, timestamp: t }, Sample { value: v, timestamp: t + 5 }],
        };
        let rec = WalRecord { series: vec![ts("a", 1.0, 100), ts("b", 0.0, -3)], kinds: vec![1, 2] };
        let body = bytes::Bytes::from(rec.encode_to_vec());
        let (series, kinds) = split_record(&body).unwrap();
        assert_eq!(kinds, [1, 2]);
        assert_eq!(series.len(), 2);
        for (raw, orig) in series.iter().zip(&rec.series) {
            assert_eq!(TimeSeries::decode(raw.bytes.clone()).unwrap(), *orig);
            let h = crate::sinks::remote_write::series_hash(
                orig.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            );
            assert_eq!(raw.hash, h);
            assert_eq!(raw.samples, 2);
        }
        assert_eq!((series[0].max_ts, series[1].max_ts), (105, 2));
        assert!(split_record(&body.slice(..body.len() - 3)).is_err());
    }
}
