//! Parameters: their types, the values given for them (read and checked
//! against type, range and step), and a request's values resolved against
//! a manifest's defaults or CI preset. Declarations are checked here too,
//! so a manifest's `default` and `ci` obey the same rules as a `--param`.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, anyhow, ensure};
use serde::{Deserialize, Serialize};

use super::{BINARY, Workload, is_identifier};
use crate::units::Mib;

/// When a parameter's value is used: a build parameter makes another binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Build,
    Run,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Build => "build",
            Self::Run => "run",
        })
    }
}

/// The type of a parameter, which decides how values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A whole number in the manifest's `unit`.
    Int,
    /// A memory size (`512M`, `2G`, bare MiB), passed on in MiB.
    Size,
    /// A time (`90`, `90s`, `2m`, `1h30m`: [`crate::duration`]), passed on in seconds.
    Duration,
    /// One of `choices`, passed on as written.
    Choice,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Int => "int",
            Self::Size => "size",
            Self::Duration => "duration",
            Self::Choice => "choice",
        })
    }
}

/// A value as written in a manifest: `default = 512` or `default = "512M"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "a whole number or a string")]
pub enum Literal {
    Int(i64),
    Text(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

/// One parameter of a workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub default: Literal,
    /// The tiny CI size (seconds under TCG); the default when absent.
    pub ci: Option<Literal>,
    /// Required for `int`; implied for `size` (MiB) and `duration` (s).
    pub unit: Option<String>,
    /// Bounds in the parameter's unit; required except for `choice`.
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub multiple_of: Option<i64>,
    /// The allowed values of a `choice`.
    pub choices: Option<Vec<String>>,
    pub stage: Stage,
    pub description: String,
}

impl Param {
    /// The unit values are passed on in (`MiB`, `s`, the manifest's); empty for a choice.
    pub fn unit(&self) -> &str {
        match self.kind {
            ParamType::Int => self.unit.as_deref().unwrap_or(""),
            ParamType::Size => "MiB",
            ParamType::Duration => "s",
            ParamType::Choice => "",
        }
    }

    /// What may be given, for tables and errors: `16..=1024 points, a multiple of 8`,
    /// `on|off`.
    pub fn range(&self) -> String {
        if let Some(choices) = &self.choices {
            return choices.join("|");
        }
        let mut text = format!(
            "{}..={} {}",
            self.min.unwrap_or(i64::MIN),
            self.max.unwrap_or(i64::MAX),
            self.unit()
        );
        if let Some(step) = self.multiple_of {
            text += &format!(", a multiple of {step}");
        }
        text
    }

    /// The value for a preset, as written in the manifest.
    pub fn preset_value(&self, preset: Preset) -> &Literal {
        match preset {
            Preset::Ci => self.ci.as_ref().unwrap_or(&self.default),
            Preset::Default => &self.default,
        }
    }

    /// Reads a given value and returns it as it is passed on (MiB, seconds, …).
    pub fn value(&self, text: &str) -> Result<String> {
        let text = text.trim();
        let number = match self.kind {
            ParamType::Choice => {
                let choices = self.choices.as_deref().unwrap_or_default();
                ensure!(
                    choices.iter().any(|c| c == text),
                    "`{text}` is not one of {}",
                    self.range()
                );
                return Ok(text.to_owned());
            }
            ParamType::Int => text
                .parse::<i64>()
                .map_err(|_| anyhow!("`{text}` is not a whole number")),
            ParamType::Size => text
                .parse::<Mib>()
                .and_then(|mib| Ok(i64::try_from(mib.0)?)),
            ParamType::Duration => crate::duration::parse_whole_s(text)
                .map_err(|e| anyhow!(e))
                .and_then(|s| Ok(i64::try_from(s)?)),
        }
        .map_err(|e| anyhow!("{e}; give {}", self.range()))?;
        let in_range = self.min.is_none_or(|min| number >= min)
            && self.max.is_none_or(|max| number <= max)
            && self.multiple_of.is_none_or(|step| number % step == 0);
        ensure!(
            in_range,
            "{number} {} is out of range; give {}",
            self.unit(),
            self.range()
        );
        Ok(number.to_string())
    }
}

/// Which manifest value a parameter takes when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// About a minute in a TCG guest (512 MiB, 1 vCPU).
    Default,
    /// Seconds in a TCG guest: for CI and tests.
    Ci,
}

/// Resolved values of every parameter of a workload, as passed on (sizes in
/// MiB, durations in seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// (key, value) pairs in key order, for results and logs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Workload {
    /// The default values, overridden by `given` (key, value) pairs.
    pub fn resolve_params(&self, given: &[(String, String)]) -> Result<Params> {
        self.resolve_preset(Preset::Default, given)
    }

    /// The preset's values, overridden by `given` (key, value) pairs.
    pub fn resolve_preset(&self, preset: Preset, given: &[(String, String)]) -> Result<Params> {
        let mut values = BTreeMap::new();
        for (key, text) in given {
            let param = self.params.get(key).ok_or_else(|| {
                anyhow!(
                    "`{}` has no parameter `{key}`; its parameters: {}",
                    self.name,
                    self.param_names()
                )
            })?;
            let value = param
                .value(text)
                .with_context(|| format!("`{}` parameter `{key}`", self.name))?;
            ensure!(
                values.insert(key.clone(), value).is_none(),
                "`{}` parameter `{key}` is given twice",
                self.name
            );
        }
        for (key, param) in &self.params {
            if !values.contains_key(key) {
                let value = param
                    .value(&param.preset_value(preset).to_string())
                    .with_context(|| {
                        format!("{}: `params.{key}`", self.manifest_path().display())
                    })?;
                values.insert(key.clone(), value);
            }
        }
        Ok(Params(values))
    }

    fn param_names(&self) -> String {
        if self.params.is_empty() {
            return "none".into();
        }
        self.params.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Checks one `[params.KEY]` declaration.
pub(super) fn validate_param(key: &str, p: &Param) -> Result<()> {
    ensure!(
        is_identifier(key) && key != BINARY,
        "the key must be lowercase letters, digits and _, and not `{BINARY}`"
    );
    ensure!(!p.description.trim().is_empty(), "`description` is missing");
    let bounded = p.min.is_some() && p.max.is_some();
    match p.kind {
        ParamType::Choice => {
            let choices = p.choices.as_deref().unwrap_or_default();
            ensure!(!choices.is_empty(), "a choice needs `choices`");
            ensure!(
                choices.iter().all(|c| is_safe_word(c)),
                "`choices` may hold letters, digits, `_`, `.` and `-` only"
            );
            ensure!(
                p.unit.is_none() && p.min.is_none() && p.max.is_none() && p.multiple_of.is_none(),
                "a choice takes no `unit`, `min`, `max` or `multiple_of`"
            );
        }
        ParamType::Int => {
            ensure!(p.unit.is_some(), "an int needs a `unit`");
            ensure!(bounded, "an int needs `min` and `max`");
        }
        ParamType::Size | ParamType::Duration => {
            let suffix = if p.kind == ParamType::Size {
                "_mib"
            } else {
                "_s"
            };
            ensure!(
                key.ends_with(suffix),
                "the key of a {} must end in `{suffix}` (its unit)",
                p.kind
            );
            ensure!(
                p.unit.is_none(),
                "the unit of a {} is fixed: remove `unit`",
                p.kind
            );
            ensure!(bounded, "a {} needs `min` and `max`", p.kind);
        }
    }
    if p.kind != ParamType::Choice {
        ensure!(p.choices.is_none(), "only a choice takes `choices`");
        ensure!(p.min <= p.max, "`min` is above `max`");
        ensure!(
            p.multiple_of.is_none_or(|step| step > 0),
            "`multiple_of` must be positive"
        );
    }
    p.value(&p.default.to_string()).context("`default`")?;
    if let Some(ci) = &p.ci {
        p.value(&ci.to_string()).context("`ci`")?;
    }
    Ok(())
}

/// Safe anywhere in an argv, even through a shell: no quoting needed.
fn is_safe_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use super::super::testkit::{demo, given, repo_workloads};

    #[test]
    fn a_value_never_splits_into_arguments() {
        let (_root, w) = demo();
        let err = w
            .resolve_params(&given(&[("mode", "fast --evil")]))
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "`demo` parameter `mode`: `fast --evil` is not one of fast|slow"
        );
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let (_root, w) = demo();
        let cases = [
            (
                ("colour", "red"),
                "`demo` has no parameter `colour`; its parameters: mem_mib, mode, size, time_s",
            ),
            (
                ("size", "lots"),
                "`demo` parameter `size`: `lots` is not a whole number; give 8..=4096 elements, a multiple of 8",
            ),
            (
                ("size", "4104"),
                "`demo` parameter `size`: 4104 elements is out of range; give 8..=4096 elements, a multiple of 8",
            ),
            (
                ("size", "12"),
                "`demo` parameter `size`: 12 elements is out of range; give 8..=4096 elements, a multiple of 8",
            ),
            (
                ("mem_mib", "8G"),
                "`demo` parameter `mem_mib`: 8192 MiB is out of range; give 1..=4096 MiB",
            ),
            (
                ("mem_mib", "1.5G"),
                "`demo` parameter `mem_mib`: `1.5G` has an unknown unit; write it like 512M, 2G or 1536MiB; give 1..=4096 MiB",
            ),
            (
                ("time_s", "soon"),
                "`demo` parameter `time_s`: `soon` is not a duration (write it like 90, 90s, 2m or 1h30m); give 1..=3600 s",
            ),
            (
                ("time_s", "1500ms"),
                "`demo` parameter `time_s`: `1500ms` is not a whole number of seconds; give 1..=3600 s",
            ),
            (
                ("time_s", "2d"),
                "`demo` parameter `time_s`: 172800 s is out of range; give 1..=3600 s",
            ),
            (
                ("time_s", "0"),
                "`demo` parameter `time_s`: 0 s is out of range; give 1..=3600 s",
            ),
        ];
        for ((key, value), expected) in cases {
            let err = w.resolve_params(&given(&[(key, value)])).unwrap_err();
            assert_eq!(format!("{err:#}"), expected);
        }
        let twice = w
            .resolve_params(&given(&[("size", "8"), ("size", "16")]))
            .unwrap_err();
        assert_eq!(twice.to_string(), "`demo` parameter `size` is given twice");
    }

    #[test]
    fn durations_read_like_the_duration_flags() {
        let w = load(&repo_workloads(), "cpu_hog").unwrap();
        let duration_s = |text: &str| {
            w.resolve_params(&given(&[("duration_s", text)]))
                .map(|p| p.get("duration_s").unwrap().to_owned())
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(duration_s("1h30m"), Ok("5400".into()));
        assert_eq!(duration_s("90"), Ok("90".into()));
        assert_eq!(duration_s("2m"), Ok("120".into()));
        assert_eq!(
            duration_s("1h30"),
            Err("`cpu_hog` parameter `duration_s`: `1h30` is not a duration (write it like 90, 90s, 2m or 1h30m); give 1..=86400 s".into())
        );
    }
}
