//! Configuration pieces shared by several sources and sinks: durations,
//! secrets, basic auth and TLS settings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value (password, token). Debug, Display and Serialize print
/// `<redacted>`, so a secret cannot reach a log line or `vantage check`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret from `value` or, when unset, from the file `file` (its
    /// content with the trailing newline removed). Empty when neither is set.
    pub fn resolve(value: &Option<Secret>, file: &Option<PathBuf>, key: &str) -> Result<Secret, String> {
        match (value, file) {
            (Some(v), Some(f)) if !v.is_empty() && !f.as_os_str().is_empty() => {
                Err(format!("{key} and {key}_file are both set; keep one"))
            }
            (Some(v), _) if !v.is_empty() => Ok(v.clone()),
            (_, Some(f)) if !f.as_os_str().is_empty() => std::fs::read_to_string(f)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("{key}_file {}: {e}", f.display())),
            _ => Ok(Secret::default()),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if EXPOSE_SECRETS.get() {
            return s.serialize_str(&self.0);
        }
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

thread_local! {
    /// Set only inside [`fingerprint`]: a changed password or header must
    /// count as a change on reload, and the redacted form hides it.
    static EXPOSE_SECRETS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `value` as JSON with secrets in clear, to tell whether two versions of
/// a config section differ. Compared and dropped, never shown or logged.
pub fn fingerprint<T: Serialize>(value: &T) -> serde_json::Value {
    EXPOSE_SECRETS.set(true);
    let out = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    EXPOSE_SECRETS.set(false);
    out
}

/// HTTP basic authentication; the password may come from a file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl BasicAuth {
    /// Username and password, or None when no username is set (an empty
    /// `${APP_METRICS_USERNAME}` turns basic auth off).
    pub fn credentials(&self) -> Result<Option<(String, Secret)>, String> {
        if self.username.is_empty() {
            return Ok(None);
        }
        let password = Secret::resolve(&self.password, &self.password_file, "password")?;
        Ok(Some((self.username.clone(), password)))
    }
}

/// TLS settings for HTTPS clients (rustls).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificates to trust in addition to the
    /// built-in roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, instead of the host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any server certificate. Off by default and loudly warned about.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Parses a Prometheus-style duration: one or more `<number><unit>` with
/// unit `ms`, `s`, `m`, `h`, `d`, `w` or `y` ("15s", "1m30s", "500ms").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use forms like \"15s\", \"1m\", \"1h30m\", \"500ms\"");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        total += Duration::from_millis(n.checked_mul(ms).ok_or_else(bad)?);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Parses a byte size with Prometheus's meanings (alecthomas/units
/// `Base2Bytes`, which Prometheus uses for `body_size_limit` and
/// `--storage.tsdb.retention.size`): every unit is a power of 1024, so
/// KB = KiB = 1024, MB = MiB = 2^20, GB = GiB = 2^30, TB = TiB, PB = PiB,
/// EB = EiB. The number may have decimals ("1.5GB"); a plain number or
/// `B` is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size {text:?}: {why}");
    let t = text.trim();
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..end], t[end..].trim());
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && frac.is_empty()) || frac.contains('.') {
        return Err(bad("use forms like \"512\", \"10MB\", \"1.5GiB\""));
    }
    let shift = match unit {
        "" | "B" => 0,
        "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        "PB" | "PiB" => 50,
        "EB" | "EiB" => 60,
        _ => return Err(bad("the unit must be B, KB, MB, GB, TB, PB or EB (or KiB, MiB, ...; all powers of 1024)")),
    };
    let too_large = || bad("too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    if !frac.is_empty() {
        // The fraction alone, so that large whole parts stay exact.
        let part: f64 = format!("0.{frac}").parse().map_err(|_| bad("bad fraction"))?;
        bytes = bytes.checked_add((part * (1u64 << shift) as f64).round() as u64).ok_or_else(too_large)?;
    }
    Ok(bytes)
}

/// serde adapter for byte sizes: an integer (bytes) or a string that
/// [`parse_size`] reads ("1GiB", "512MB").
pub mod size {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(n),
            Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if !ms.is_multiple_of(60_000) || ms == 0 {
        format!("{}s", ms / 1000)
    } else if !ms.is_multiple_of(3_600_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}h", ms / 3_600_000)
    }
}

/// serde adapter for durations written as strings ("15s").
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
}

/// serde adapter for optional durations; an empty string means unset.
pub mod opt_duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.map(format_duration).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "15", "s", "1x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }

    #[test]
    fn sizes_as_prometheus() {
        assert_eq!(parse_size("10MB"), Ok(10_485_760));
        assert_eq!(parse_size("10MiB"), Ok(10_485_760));
        assert_eq!(parse_size("1.5GB"), Ok(1_610_612_736));
        assert_eq!(parse_size("1KB"), Ok(1024));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "MB", "10 parsecs", "10mb", "1.5.2GB", "1.GB", ".5GB", "-1MB", "99999999999EB"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e} should name {bad:?}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
    }

    #[test]
    fn secret_from_file_and_conflicts() {
        let dir = std::env::temp_dir().join(format!("vantage-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(Secret::resolve(&None, &Some(file.clone()), "password").unwrap().expose(), "s3cret");
        assert!(Secret::resolve(&Some(Secret::new("x")), &Some(file), "password").is_err());
        let missing = Secret::resolve(&None, &Some(dir.join("nope")), "password").unwrap_err();
        assert!(missing.contains("password_file") && missing.contains("nope"), "{missing}");
    }
}
