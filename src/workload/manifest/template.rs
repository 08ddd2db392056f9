//! Argument templates: `{key}` inside an argument is replaced by the
//! parameter's value, checked against its type first; an argument stays one
//! argument whatever the value, so no value can add or split arguments.

use anyhow::{Result, anyhow, ensure};

use super::{BINARY, Params, Workload, is_identifier};

impl Workload {
    /// The build commands with the build parameters filled in.
    pub fn build_commands(&self, params: &Params) -> Result<Vec<Vec<String>>> {
        self.build
            .commands
            .iter()
            .map(|command| render(command, |key| params.get(key)))
            .collect()
    }

    /// The run argv with the run parameters filled in and `{binary}` replaced
    /// by the program's path in the guest.
    pub fn run_argv(&self, params: &Params, binary: &str) -> Result<Vec<String>> {
        render(&self.run.argv, |key| {
            if key == BINARY {
                Some(binary)
            } else {
                params.get(key)
            }
        })
    }
}

/// A part of an argument template.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    Text(&'a str),
    Key(&'a str),
}

/// Splits `--nx={nx}` into `--nx=` and the key `nx`.
pub(super) fn pieces(arg: &str) -> Result<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find(['{', '}']) {
        ensure!(
            rest[open..].starts_with('{'),
            "`{arg}` has a `}}` without its `{{`"
        );
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| anyhow!("`{arg}` has a `{{` without its `}}`"))?
            + open;
        let key = &rest[open + 1..close];
        ensure!(
            is_identifier(key),
            "`{arg}`: `{{{key}}}` is not a parameter name"
        );
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        out.push(Piece::Key(key));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Fills in a template, one output argument per template argument.
fn render<'v>(template: &[String], value: impl Fn(&str) -> Option<&'v str>) -> Result<Vec<String>> {
    template
        .iter()
        .map(|arg| {
            pieces(arg)?
                .into_iter()
                .map(|piece| match piece {
                    Piece::Text(text) => Ok(text),
                    Piece::Key(key) => {
                        value(key).ok_or_else(|| anyhow!("no value for `{{{key}}}` in `{arg}`"))
                    }
                })
                .collect::<Result<String>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Preset;
    use super::super::testkit::{demo, given, strings};
    use super::*;

    #[test]
    fn presets_and_given_values_render_into_argv() {
        let (_root, w) = demo();
        let defaults = w.resolve_params(&[]).unwrap();
        assert_eq!(
            w.build_commands(&defaults).unwrap(),
            [
                strings(&["gcc", "-DSIZE=1000", "-o", "demo", "demo.c"]),
                strings(&["strip", "demo"])
            ]
        );
        assert_eq!(
            w.run_argv(&defaults, "/root/demo").unwrap(),
            strings(&["/root/demo", "--mem=1024", "--for=120", "--mode", "fast"])
        );
        let ci = w.resolve_preset(Preset::Ci, &[]).unwrap();
        assert_eq!(ci.get("size"), Some("16"));
        assert_eq!(ci.get("mem_mib"), Some("16"));
        assert_eq!(ci.get("time_s"), Some("120"), "no ci value: the default");

        let chosen = w
            .resolve_preset(
                Preset::Ci,
                &given(&[("mem_mib", "2G"), ("time_s", "90s"), ("mode", "slow")]),
            )
            .unwrap();
        assert_eq!(
            chosen.iter().collect::<Vec<_>>(),
            [
                ("mem_mib", "2048"),
                ("mode", "slow"),
                ("size", "16"),
                ("time_s", "90")
            ]
        );
    }

    #[test]
    fn templates_split_into_text_and_keys() {
        assert_eq!(
            pieces("--nx={nx}x{ny}").unwrap(),
            [
                Piece::Text("--nx="),
                Piece::Key("nx"),
                Piece::Text("x"),
                Piece::Key("ny")
            ]
        );
        assert_eq!(pieces("plain").unwrap(), [Piece::Text("plain")]);
        for bad in ["{", "}", "a}{b}", "{Nx}", "{}", "{a b}"] {
            assert!(pieces(bad).is_err(), "{bad}");
        }
    }
}
