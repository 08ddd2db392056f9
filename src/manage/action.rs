//! What a policy asks for, and why. The executor applies [`Action`]s; the
//! decision log records the rest.

/// One change to one VM. Targets are absolute, so applying an action twice
/// is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Restrict one vCPU to these pCPUs (virDomainPinVcpu).
    Pin {
        vm: String,
        vcpu: u32,
        pcpus: Vec<u32>,
    },
    /// Set the balloon target (virDomainSetMemoryFlags, live).
    SetMemory { vm: String, target_kib: u64 },
    /// Set the number of online vCPUs (virDomainSetVcpusFlags, live).
    SetVcpus { vm: String, count: u32 },
}

/// An action with its explanation for the decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// One sentence a person reads: what was wrong and what this does.
    pub reason: String,
    /// The numbers that drove the decision, `key` → value with its unit in
    /// the key (`unused_mib`, `rate_mib_s`).
    pub inputs: Vec<(String, String)>,
}

impl Action {
    pub fn vm(&self) -> &str {
        match self {
            Action::Pin { vm, .. } | Action::SetMemory { vm, .. } | Action::SetVcpus { vm, .. } => {
                vm
            }
        }
    }
}

impl Decision {
    pub fn new(action: Action, reason: impl Into<String>) -> Decision {
        Decision {
            action,
            reason: reason.into(),
            inputs: Vec::new(),
        }
    }

    /// Adds one input; numbers are written with at most one decimal.
    pub fn input(mut self, key: &str, value: impl Input) -> Decision {
        self.inputs.push((key.to_string(), value.render()));
        self
    }
}

/// A value that can go into a decision's inputs.
pub trait Input {
    fn render(&self) -> String;
}

impl Input for f64 {
    fn render(&self) -> String {
        let s = format!("{self:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    }
}

impl Input for u64 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Input for u32 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Input for &str {
    fn render(&self) -> String {
        self.to_string()
    }
}
