//! `--matrix vcpus=1,2 memory=512M,1G`: the VM configurations a benchmark
//! runs under, one cell per combination, applied live between cells.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::lab::state::VmRecord;
use crate::units::Mib;

/// The values to try for each dimension; `None` leaves the VMs as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub vcpus: Option<Vec<u32>>,
    #[serde(rename = "memory_mib")]
    pub memory: Option<Vec<Mib>>,
}

/// One combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// 1-based, in the order the cells run.
    pub index: usize,
    pub vcpus: Option<u32>,
    #[serde(rename = "memory_mib")]
    pub memory: Option<Mib>,
}

impl Matrix {
    /// `KEY=V1,V2…` items, each key once: `vcpus` (counts), `memory` (sizes).
    pub fn parse(items: &[String]) -> Result<Matrix> {
        let mut m = Matrix::default();
        for item in items {
            let Some((key, values)) = item.split_once('=') else {
                bail!(
                    "matrix item `{item}` is not KEY=V1,V2; e.g. --matrix vcpus=1,2 memory=512M,1G"
                );
            };
            let values: Vec<&str> = values.split(',').map(str::trim).collect();
            if values.iter().any(|v| v.is_empty()) {
                bail!("matrix item `{item}` has an empty value");
            }
            match key.trim() {
                "vcpus" if m.vcpus.is_none() => {
                    let counts = values
                        .iter()
                        .map(|v| match v.parse::<u32>() {
                            Ok(n) if n >= 1 => Ok(n),
                            _ => bail!("matrix value `vcpus={v}` is not a vCPU count (1 or more)"),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    m.vcpus = Some(counts);
                }
                "memory" if m.memory.is_none() => {
                    let sizes = values
                        .iter()
                        .map(|v| {
                            let size: Mib = v.parse()?;
                            if size < Mib(128) {
                                bail!(
                                    "matrix value `memory={v}` is below 128M, too small for a guest"
                                );
                            }
                            Ok(size)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    m.memory = Some(sizes);
                }
                "vcpus" | "memory" => bail!("matrix key `{key}` is given twice"),
                other => bail!("unknown matrix key `{other}`; use vcpus and/or memory"),
            }
        }
        Ok(m)
    }

    /// Every combination, vCPUs varying slowest; one cell that changes
    /// nothing when the matrix is empty.
    pub fn cells(&self) -> Vec<Cell> {
        let vcpus: Vec<Option<u32>> = match &self.vcpus {
            Some(v) => v.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let memory: Vec<Option<Mib>> = match &self.memory {
            Some(m) => m.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let mut cells = Vec::new();
        for v in &vcpus {
            for m in &memory {
                cells.push(Cell {
                    index: cells.len() + 1,
                    vcpus: *v,
                    memory: *m,
                });
            }
        }
        cells
    }

    /// Refuses cells a VM cannot take live (beyond its maximum).
    pub fn check(&self, vm: &VmRecord) -> Result<()> {
        if let Some(v) = self.vcpus.iter().flatten().find(|v| **v > vm.max_vcpus) {
            bail!(
                "matrix cell vcpus={v} is beyond {}'s maximum of {} vCPUs; recreate it with a higher --max-vcpus (`vmlab down {}`, then `vmlab up … --max-vcpus {v}`)",
                vm.name,
                vm.max_vcpus,
                vm.name
            );
        }
        if let Some(m) = self.memory.iter().flatten().find(|m| **m > vm.max_memory) {
            bail!(
                "matrix cell memory={} is beyond {}'s maximum of {}; recreate it with a higher --max-memory (`vmlab down {}`, then `vmlab up … --max-memory {}M`)",
                m.human(),
                vm.name,
                vm.max_memory.human(),
                vm.name,
                m.0
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = self.vcpus {
            parts.push(format!("vcpus={v}"));
        }
        if let Some(m) = self.memory {
            parts.push(format!("memory={}M", m.0));
        }
        if parts.is_empty() {
            f.write_str("as is")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::vm_record;

    fn items(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn cells_are_the_product_in_order() {
        let m = Matrix::parse(&items("vcpus=1,2 memory=512M,1G")).unwrap();
        let cells: Vec<String> = m
            .cells()
            .iter()
            .map(|c| format!("{}:{c}", c.index))
            .collect();
        assert_eq!(
            cells,
            [
                "1:vcpus=1 memory=512M",
                "2:vcpus=1 memory=1024M",
                "3:vcpus=2 memory=512M",
                "4:vcpus=2 memory=1024M"
            ]
        );
        assert_eq!(Matrix::default().cells().len(), 1);
        assert_eq!(Matrix::default().cells()[0].to_string(), "as is");
    }

    #[test]
    fn malformed_matrices_are_one_line_errors() {
        let cases = [
            ("vcpus", "is not KEY=V1,V2"),
            ("vcpus=1,,2", "has an empty value"),
            ("vcpus=0", "is not a vCPU count"),
            ("vcpus=two", "is not a vCPU count"),
            ("memory=64M", "below 128M"),
            ("memory=lots", "is not a size"),
            ("disk=1G", "unknown matrix key `disk`"),
            ("vcpus=1 vcpus=2", "given twice"),
        ];
        for (text, expected) in cases {
            let err = Matrix::parse(&items(text)).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn cells_beyond_a_vms_maximum_are_refused() {
        let vm = vm_record("vm-1"); // max 2 vCPUs, 1024 MiB
        Matrix::parse(&items("vcpus=1,2 memory=512M,1G"))
            .unwrap()
            .check(&vm)
            .unwrap();
        let err = Matrix::parse(&items("vcpus=1,4"))
            .unwrap()
            .check(&vm)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("matrix cell vcpus=4 is beyond vm-1's maximum of 2 vCPUs"),
            "{err}"
        );
        let err = Matrix::parse(&items("memory=2G"))
            .unwrap()
            .check(&vm)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("matrix cell memory=2.0 GiB is beyond vm-1's maximum of 1.0 GiB"),
            "{err}"
        );
    }
}
