//! The latest sample of each VM and pCPU in Prometheus' text exposition format
//! (version 0.0.4), for the dashboard's `/metrics`.
//!
//! Base units as Prometheus wants them (bytes, seconds); an empty cell of
//! `metrics.csv` (a gap) is left out rather than reported as 0.

use std::fmt::Write;

use super::row::MetricsRow;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const MIB: f64 = 1024.0 * 1024.0;

enum Kind {
    Gauge,
    Counter,
}

/// One per-VM metric: name, help, type, and how to get it (in base units) from a row.
struct VmMetric {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: fn(&MetricsRow) -> Option<f64>,
}

const VM_METRICS: &[VmMetric] = &[
    VmMetric {
        name: "vmlab_vm_cpu_percent",
        help: "Busy share of all guest CPUs (guest reporter), 0-100.",
        kind: Kind::Gauge,
        value: |r| r.cpu_pct,
    },
    VmMetric {
        name: "vmlab_vm_memory_total_bytes",
        help: "Guest MemTotal.",
        kind: Kind::Gauge,
        value: |r| r.mem_total_mib.map(|m| m * MIB),
    },
    VmMetric {
        name: "vmlab_vm_memory_used_bytes",
        help: "Guest MemTotal - MemAvailable.",
        kind: Kind::Gauge,
        value: |r| r.mem_used_mib.map(|m| m * MIB),
    },
    VmMetric {
        name: "vmlab_vm_memory_available_bytes",
        help: "Guest MemAvailable.",
        kind: Kind::Gauge,
        value: |r| r.mem_available_mib.map(|m| m * MIB),
    },
    VmMetric {
        name: "vmlab_vm_disk_read_bytes_per_second",
        help: "Guest disk reads over the last interval.",
        kind: Kind::Gauge,
        value: |r| r.disk_read_kib_s.map(|k| k * 1024.0),
    },
    VmMetric {
        name: "vmlab_vm_disk_write_bytes_per_second",
        help: "Guest disk writes over the last interval.",
        kind: Kind::Gauge,
        value: |r| r.disk_write_kib_s.map(|k| k * 1024.0),
    },
    VmMetric {
        name: "vmlab_vm_network_receive_bytes_total",
        help: "Bytes received by the guest's interfaces since it booted.",
        kind: Kind::Counter,
        value: |r| r.net_rx_bytes.map(|b| b as f64),
    },
    VmMetric {
        name: "vmlab_vm_network_transmit_bytes_total",
        help: "Bytes sent by the guest's interfaces since it booted.",
        kind: Kind::Counter,
        value: |r| r.net_tx_bytes.map(|b| b as f64),
    },
    VmMetric {
        name: "vmlab_vm_balloon_actual_bytes",
        help: "Memory the balloon leaves the guest (libvirt).",
        kind: Kind::Gauge,
        value: |r| r.balloon_actual_mib.map(|m| m * MIB),
    },
    VmMetric {
        name: "vmlab_vm_balloon_unused_bytes",
        help: "Memory unused inside the guest, from the balloon's stats (libvirt).",
        kind: Kind::Gauge,
        value: |r| r.balloon_unused_mib.map(|m| m * MIB),
    },
    VmMetric {
        name: "vmlab_vm_vcpus",
        help: "Online vCPUs of the domain (libvirt).",
        kind: Kind::Gauge,
        value: |r| r.vcpus.map(f64::from),
    },
    VmMetric {
        name: "vmlab_vm_cpu_seconds_total",
        help: "CPU time used by the domain (libvirt).",
        kind: Kind::Counter,
        value: |r| r.domain_cpu_s,
    },
    VmMetric {
        name: "vmlab_vm_memory_floor_bytes",
        help: "Unused memory the manager keeps in the VM (its floor).",
        kind: Kind::Gauge,
        value: |r| r.mem_floor_mib.map(|m| m * MIB),
    },
    VmMetric {
        name: "vmlab_vm_memory_high_threshold_percent",
        help: "The manager grows the VM above this used share of its allocation.",
        kind: Kind::Gauge,
        value: |r| r.mem_high_pct,
    },
    VmMetric {
        name: "vmlab_vm_memory_low_threshold_percent",
        help: "The manager shrinks the VM below this used share of its allocation.",
        kind: Kind::Gauge,
        value: |r| r.mem_low_pct,
    },
];

/// Renders the latest row of each VM (`latest`, one per VM). pCPU figures come
/// from the most recent of those rows.
pub fn render(lab: &str, latest: &[MetricsRow]) -> String {
    let mut out = String::new();
    let lab = escape(lab);
    for metric in VM_METRICS {
        let kind = match metric.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", metric.name, metric.help);
        let _ = writeln!(out, "# TYPE {} {kind}", metric.name);
        for row in latest {
            if let Some(value) = (metric.value)(row) {
                let vm = escape(&row.vm);
                let _ = writeln!(out, "{}{{lab=\"{lab}\",vm=\"{vm}\"}} {value}", metric.name);
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP vmlab_vm_vcpu_pin_info A vCPU's pin (libvirt): its cpuset in the pcpus label.\n\
         # TYPE vmlab_vm_vcpu_pin_info gauge"
    );
    for row in latest {
        let vm = escape(&row.vm);
        for pair in row.pins.split(';').filter(|p| !p.is_empty()) {
            let (vcpu, pcpus) = pair.split_once(':').unwrap_or((pair, ""));
            let (vcpu, pcpus) = (escape(vcpu), escape(pcpus));
            let _ = writeln!(
                out,
                "vmlab_vm_vcpu_pin_info{{lab=\"{lab}\",vm=\"{vm}\",vcpu=\"{vcpu}\",pcpus=\"{pcpus}\"}} 1"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vmlab_pcpu_utilisation_percent Host CPU busy share from the vCPUs on it, 0-100.\n\
         # TYPE vmlab_pcpu_utilisation_percent gauge"
    );
    let newest = latest.iter().max_by(|a, b| a.t_s.total_cmp(&b.t_s));
    for (pcpu, value) in newest.map_or(&[][..], |r| &r.pcpu_pct).iter().enumerate() {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "vmlab_pcpu_utilisation_percent{{lab=\"{lab}\",pcpu=\"{pcpu}\"}} {value}"
            );
        }
    }
    out
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use prometheus_parse::{Scrape, Value};

    use super::*;

    fn row(vm: &str, t_s: f64) -> MetricsRow {
        MetricsRow {
            t_s,
            vm: vm.to_string(),
            cpu_pct: Some(12.5),
            mem_total_mib: Some(512.0),
            mem_used_mib: Some(100.0),
            mem_available_mib: Some(412.0),
            disk_read_kib_s: Some(2.0),
            disk_write_kib_s: Some(0.5),
            net_rx_bytes: Some(1000),
            net_tx_bytes: Some(2000),
            balloon_actual_mib: Some(512.0),
            balloon_unused_mib: Some(300.0),
            vcpus: Some(2),
            pins: "0:1;1:0-1".into(),
            domain_cpu_s: Some(3.25),
            pcpu_pct: vec![Some(40.0 + t_s), None],
            ..MetricsRow::default()
        }
    }

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition text")
    }

    fn value(scrape: &Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))?;
        match sample.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn a_parser_reads_every_vm_and_pcpu_sample() {
        let mut no_balloon = row("vm-2", 2.0);
        no_balloon.balloon_actual_mib = None;
        no_balloon.balloon_unused_mib = None;
        let text = render("default", &[row("vm-1", 1.0), no_balloon]);
        let scrape = parse(&text);

        assert_eq!(
            value(&scrape, "vmlab_vm_cpu_percent", ("vm", "vm-1")),
            Some(12.5)
        );
        assert_eq!(
            value(&scrape, "vmlab_vm_memory_used_bytes", ("vm", "vm-2")),
            Some(100.0 * MIB)
        );
        assert!(matches!(
            scrape
                .samples
                .iter()
                .find(|s| s.metric == "vmlab_vm_network_receive_bytes_total")
                .unwrap()
                .value,
            Value::Counter(1000.0)
        ));
        assert!(value(&scrape, "vmlab_vm_balloon_actual_bytes", ("vm", "vm-1")).is_some());
        assert_eq!(
            value(&scrape, "vmlab_vm_balloon_actual_bytes", ("vm", "vm-2")),
            None,
            "a VM without balloon stats is a gap, not 0"
        );
        // pCPUs come from the newest row (vm-2, t_s 2); pcpu1 is a gap.
        assert_eq!(
            value(&scrape, "vmlab_pcpu_utilisation_percent", ("pcpu", "0")),
            Some(42.0)
        );
        assert_eq!(
            value(&scrape, "vmlab_pcpu_utilisation_percent", ("pcpu", "1")),
            None
        );
        let pins: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "vmlab_vm_vcpu_pin_info" && s.labels.get("vm") == Some("vm-1"))
            .map(|s| {
                (
                    s.labels.get("vcpu").unwrap(),
                    s.labels.get("pcpus").unwrap(),
                )
            })
            .collect();
        assert_eq!(pins, [("0", "1"), ("1", "0-1")]);
        assert!(
            scrape
                .samples
                .iter()
                .all(|s| s.labels.get("lab") == Some("default"))
        );
        assert_eq!(
            scrape.docs.get("vmlab_vm_cpu_percent").map(String::as_str),
            Some("Busy share of all guest CPUs (guest reporter), 0-100.")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render("lab \"x\"", &[row("vm\\1\nnew", 1.0)]);
        assert!(
            text.contains(r#"vmlab_vm_cpu_percent{lab="lab \"x\"",vm="vm\\1\nnew"} 12.5"#),
            "{text}"
        );
        let scrape = parse(&text);
        assert_eq!(
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == "vmlab_vm_cpu_percent")
                .count(),
            1
        );
    }

    #[test]
    fn no_rows_is_still_valid_text() {
        let scrape = parse(&render("default", &[]));
        assert!(scrape.samples.is_empty());
    }
}
