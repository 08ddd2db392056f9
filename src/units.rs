//! Sizes as users write them (`512M`, `2G`, `1536MiB`) and as libvirt wants them (KiB).

use anyhow::{Result, bail};

/// Parses a memory size into MiB. A bare number is MiB; suffixes K, M, G, T
/// (optionally with `iB` or `B`) are binary units, case-insensitive.
pub fn parse_size_mib(text: &str) -> Result<u64> {
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
        Some(kib) if kib % 1024 == 0 => Ok(kib / 1024),
        Some(_) => bail!("`{text}` is not a whole number of MiB; {hint}"),
        None => bail!("`{text}` is too large"),
    }
}

/// `2048` → `2.0 GiB`, `512` → `512 MiB`.
pub fn format_mib(mib: u64) -> String {
    if mib >= 1024 {
        format!("{:.1} GiB", mib as f64 / 1024.0)
    } else {
        format!("{mib} MiB")
    }
}

pub fn mib_to_kib(mib: u64) -> u64 {
    mib * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_size_mib("512M").unwrap(), 512);
        assert_eq!(parse_size_mib("512").unwrap(), 512);
        assert_eq!(parse_size_mib("2G").unwrap(), 2048);
        assert_eq!(parse_size_mib("2gib").unwrap(), 2048);
        assert_eq!(parse_size_mib("1536MiB").unwrap(), 1536);
        assert_eq!(parse_size_mib("1048576K").unwrap(), 1024);
        assert_eq!(parse_size_mib("1T").unwrap(), 1 << 20);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "M", "-1G", "1.5G", "12Q", "1000K", "99999999999999T"] {
            assert!(parse_size_mib(bad).is_err(), "{bad} accepted");
        }
        let err = parse_size_mib("lots").unwrap_err().to_string();
        assert!(err.contains("`lots` is not a size"), "{err}");
    }

    #[test]
    fn formats_for_humans() {
        assert_eq!(format_mib(512), "512 MiB");
        assert_eq!(format_mib(2048), "2.0 GiB");
    }
}
