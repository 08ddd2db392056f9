//! Sizes as users write them (`512M`, `2G`, `1536MiB`) and as libvirt wants
//! them (KiB), pCPU sets as libvirt writes them (`0-3,6`), and the bounds of
//! a loop's interval.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Mebibytes (2^20 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Mib(pub u64);

/// Kibibytes (2^10 bytes), libvirt's unit for memory.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Kib(pub u64);

impl Mib {
    pub fn kib(self) -> Kib {
        Kib(self.0 * 1024)
    }

    /// `2048` → `2.0 GiB`, `512` → `512 MiB`.
    pub fn human(self) -> String {
        if self.0 >= 1024 {
            format!("{:.1} GiB", self.0 as f64 / 1024.0)
        } else {
            format!("{} MiB", self.0)
        }
    }
}

impl Kib {
    /// Whole MiB, rounded down.
    pub fn mib(self) -> Mib {
        Mib(self.0 / 1024)
    }
}

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.0)
    }
}

/// A bare number is MiB; suffixes K, M, G, T (optionally with `iB` or `B`)
/// are binary units, case-insensitive.
impl FromStr for Mib {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let hint = "write it like 512M, 2G or 1536MiB";
        let Ok(value) = digits.parse::<u64>() else {
            bail!("`{text}` is not a size; {hint}");
        };
        let kib_per_unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "k" | "kb" | "kib" => 1,
            "" | "m" | "mb" | "mib" => 1 << 10,
            "g" | "gb" | "gib" => 1 << 20,
            "t" | "tb" | "tib" => 1 << 30,
            _ => bail!("`{text}` has an unknown unit; {hint}"),
        };
        let kib = value.checked_mul(kib_per_unit).filter(|k| *k < (1 << 40));
        match kib {
            Some(kib) if kib % 1024 == 0 => Ok(Mib(kib / 1024)),
            Some(_) => bail!("`{text}` is not a whole number of MiB; {hint}"),
            None => bail!("`{text}` is too large"),
        }
    }
}

/// From `"512M"` in a file, or a bare number of MiB.
impl<'de> Deserialize<'de> for Mib {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Mib(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A set of host CPUs, as libvirt writes it (`0-3,6`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct CpuSet(Vec<u32>);

impl CpuSet {
    /// The CPUs in ascending order, without duplicates.
    pub fn new(cpus: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = cpus.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        CpuSet(v)
    }

    pub fn cpus(&self) -> &[u32] {
        &self.0
    }

    /// As a libvirt/`virsh vcpupin` bitmap: `map[i]` is CPU `i`.
    pub fn to_map(&self, host_cpus: u32) -> Vec<bool> {
        (0..host_cpus).map(|c| self.0.contains(&c)).collect()
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            parts.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
            i += 1;
        }
        f.write_str(&parts.join(","))
    }
}

impl FromStr for CpuSet {
    type Err = anyhow::Error;

    /// `0-3,6`; libvirt also allows `^N` exclusions (`0-3,^2`).
    fn from_str(text: &str) -> Result<Self> {
        let mut cpus = Vec::new();
        let mut excluded = Vec::new();
        for part in text.split(',').map(str::trim) {
            let bad = || anyhow::anyhow!("`{text}` is not a CPU set; write it like 0-3,6");
            if let Some(n) = part.strip_prefix('^') {
                excluded.push(n.parse::<u32>().map_err(|_| bad())?);
                continue;
            }
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a > b || b - a > 4096 {
                return Err(bad());
            }
            cpus.extend(a..=b);
        }
        Ok(CpuSet::new(
            cpus.into_iter().filter(|c| !excluded.contains(c)),
        ))
    }
}

/// Seconds between rounds of a long-running loop (`manage`, `monitor`,
/// `dashboard`): balloon stats and the course's monitor tick once a second,
/// and an hour is the longest round that still watches anything.
pub const INTERVAL_S: std::ops::RangeInclusive<f64> = 1.0..=3600.0;

/// `--interval SECONDS` as a number within [`INTERVAL_S`].
pub fn parse_interval_s(text: &str) -> std::result::Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds; e.g. 2"))?;
    check_interval_s(seconds).map_err(|e| e.to_string())?;
    Ok(seconds)
}

/// Refuses an interval outside [`INTERVAL_S`] (NaN and infinities included).
pub fn check_interval_s(seconds: f64) -> Result<()> {
    if !INTERVAL_S.contains(&seconds) {
        bail!(
            "an interval of {seconds} s is out of range; it must be between {} and {} seconds",
            INTERVAL_S.start(),
            INTERVAL_S.end()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_finite_and_bounded() {
        assert_eq!(parse_interval_s("2"), Ok(2.0));
        assert_eq!(parse_interval_s("1.5"), Ok(1.5));
        assert_eq!(parse_interval_s("3600"), Ok(3600.0));
        for bad in ["inf", "1e20", "1e-9", "0", "-2", "NaN", "0.5", "3601"] {
            let err = parse_interval_s(bad).unwrap_err();
            assert!(err.contains("between 1 and 3600 seconds"), "{bad}: {err}");
        }
        assert!(
            parse_interval_s("two")
                .unwrap_err()
                .contains("not a number")
        );
    }

    fn mib(text: &str) -> Result<u64> {
        text.parse::<Mib>().map(|m| m.0)
    }

    #[test]
    fn parses_binary_units() {
        assert_eq!(mib("512M").unwrap(), 512);
        assert_eq!(mib("512").unwrap(), 512);
        assert_eq!(mib("2G").unwrap(), 2048);
        assert_eq!(mib("2gib").unwrap(), 2048);
        assert_eq!(mib("1536MiB").unwrap(), 1536);
        assert_eq!(mib("1048576K").unwrap(), 1024);
        assert_eq!(mib("1T").unwrap(), 1 << 20);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "M", "-1G", "1.5G", "12Q", "1000K", "99999999999999T"] {
            assert!(mib(bad).is_err(), "{bad} accepted");
        }
        let err = mib("lots").unwrap_err().to_string();
        assert_eq!(
            err,
            "`lots` is not a size; write it like 512M, 2G or 1536MiB"
        );
    }

    #[test]
    fn sizes_from_files_take_text_or_numbers() {
        #[derive(Deserialize)]
        struct F {
            a: Mib,
            b: Mib,
        }
        let f: F = toml::from_str("a = \"2G\"\nb = 300\n").unwrap();
        assert_eq!((f.a, f.b), (Mib(2048), Mib(300)));
        let err = toml::from_str::<F>("a = \"2X\"\nb = 1\n").err().unwrap();
        assert!(err.message().contains("`2X` has an unknown unit"), "{err}");
    }

    #[test]
    fn formats_for_humans() {
        assert_eq!(Mib(512).human(), "512 MiB");
        assert_eq!(Mib(2048).human(), "2.0 GiB");
        assert_eq!(Mib(2048).to_string(), "2048 MiB");
        assert_eq!(Kib(3 * 1024 + 1023).mib(), Mib(3));
        assert_eq!(Mib(2).kib(), Kib(2048));
    }

    #[test]
    fn cpusets_round_trip_libvirt_syntax() {
        let set: CpuSet = "0-3,6,8-9".parse().unwrap();
        assert_eq!(set.cpus(), [0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(set.to_string(), "0-3,6,8-9");
        assert_eq!("0-3,^2".parse::<CpuSet>().unwrap().to_string(), "0-1,3");
        assert_eq!(CpuSet::new([3, 1, 1]).to_string(), "1,3");
        assert_eq!(CpuSet::new([1]).to_map(3), [false, true, false]);
        for bad in ["", "a", "3-1", "1,,2", "0-99999"] {
            assert!(bad.parse::<CpuSet>().is_err(), "{bad} accepted");
        }
    }
}
