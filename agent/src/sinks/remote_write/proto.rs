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
