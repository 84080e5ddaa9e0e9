//! An instance's lifecycle: EC2's states and codes, and the transitions
//! between them, written once here. Every change of state bumps the
//! instance's generation, so a reader can tell a newer record from an
//! older one (and a report receiver, a repeated one).

use serde::{Deserialize, Serialize};

/// EC2's instance states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl State {
    /// EC2's numeric code (`InstanceState.Code`, low byte).
    pub fn code(self) -> u16 {
        match self {
            State::Pending => 0,
            State::Running => 16,
            State::ShuttingDown => 32,
            State::Terminated => 48,
            State::Stopping => 64,
            State::Stopped => 80,
        }
    }

    /// EC2's name.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::ShuttingDown => "shutting-down",
            State::Terminated => "terminated",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }

    /// Every state, in code order.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Running,
        State::ShuttingDown,
        State::Terminated,
        State::Stopping,
        State::Stopped,
    ];
}

/// What moves an instance from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The guest booted (boot-complete signal or instance check).
    Booted,
    /// A stop was asked for.
    Stop,
    /// The VMM exited after a stop (or the guest powered off).
    Halted,
    /// A start of a stopped instance was asked for.
    Start,
    /// A terminate was asked for.
    Terminate,
    /// The VMM is gone and its resources are released.
    Released,
    /// The VMM died or could not start (with a reason recorded beside).
    Failed,
}

/// The state `event` leads to from `from`, or `None` when EC2 would
/// refuse it (`IncorrectInstanceState`). Terminate is allowed from every
/// state but the last two; repeating it is not an error (EC2 answers a
/// terminate of a terminated instance with its state), which callers
/// handle before asking here.
pub fn next(from: State, event: Event) -> Option<State> {
    use Event as E;
    use State as S;
    Some(match (from, event) {
        (S::Pending, E::Booted) => S::Running,
        (S::Pending | S::Running, E::Stop) => S::Stopping,
        (S::Stopping, E::Halted) => S::Stopped,
        // A guest that powers itself off is stopped, as on EC2 with the
        // default shutdown behaviour.
        (S::Running | S::Pending, E::Halted) => S::Stopped,
        (S::Stopped, E::Start) => S::Pending,
        (S::Pending | S::Running | S::Stopping | S::Stopped, E::Terminate) => S::ShuttingDown,
        (S::ShuttingDown, E::Released) => S::Terminated,
        // A VMM that dies leaves the instance stopped, with the reason.
        (S::Pending | S::Running | S::Stopping, E::Failed) => S::Stopped,
        (S::ShuttingDown, E::Failed) => S::Terminated,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_ec2s() {
        let codes: Vec<u16> = State::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 16, 32, 48, 64, 80]);
        assert_eq!(State::ShuttingDown.name(), "shutting-down");
        assert_eq!(
            serde_json::to_string(&State::ShuttingDown).unwrap(),
            "\"shutting-down\""
        );
    }

    #[test]
    fn transitions() {
        use Event as E;
        use State as S;
        assert_eq!(next(S::Pending, E::Booted), Some(S::Running));
        assert_eq!(next(S::Running, E::Stop), Some(S::Stopping));
        assert_eq!(next(S::Stopping, E::Halted), Some(S::Stopped));
        assert_eq!(next(S::Stopped, E::Start), Some(S::Pending));
        assert_eq!(next(S::Running, E::Terminate), Some(S::ShuttingDown));
        assert_eq!(next(S::ShuttingDown, E::Released), Some(S::Terminated));
        assert_eq!(next(S::Running, E::Failed), Some(S::Stopped));
        // Refused, as EC2 refuses them.
        assert_eq!(next(S::Running, E::Start), None);
        assert_eq!(next(S::Stopped, E::Stop), None);
        assert_eq!(next(S::Terminated, E::Start), None);
        assert_eq!(next(S::Terminated, E::Terminate), None);
        // Nothing leaves terminated.
        for e in [
            E::Booted,
            E::Stop,
            E::Halted,
            E::Start,
            E::Terminate,
            E::Released,
            E::Failed,
        ] {
            assert_eq!(next(S::Terminated, e), None, "{e:?}");
        }
    }
}

/// An instance as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub instance_id: String,
    pub image_id: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub subnet_id: String,
    /// The leased address; kept while stopped, released at termination.
    pub private_ip: Option<String>,
    pub mac: String,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    /// Base64, as given.
    pub user_data: Option<String>,
    pub tags: std::collections::BTreeMap<String, String>,
    pub metadata_options: stratus_devices::net::metadata::MetadataOptions,
    pub state: State,
    /// Why the state last changed, in EC2's style
    /// (`Client.InstanceInitiatedShutdown: …`), when there is a reason.
    pub state_reason: Option<String>,
    /// Bumped by every change of the record.
    pub generation: u64,
    pub launch_time: String,
    pub client_token: Option<String>,
    /// The VMM process while there is one.
    pub process: Option<crate::host::process::ProcessId>,
    pub tap: String,
    /// While a guest that reboots in a loop waits for its next VMM: when
    /// (Unix seconds) that VMM starts. In the record, so that an agent
    /// restarted meanwhile keeps the wait instead of starting it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<u64>,
}

impl Instance {
    /// Whether no VMM has ever run for this instance: it is recorded at
    /// generation 1 and nothing changes the record before its first VMM
    /// starts (which bumps the generation, as every later change does).
    pub fn is_first_launch(&self) -> bool {
        self.state == State::Pending && self.process.is_none() && self.generation == 1
    }

    /// Applies `event`; the new state, or `None` (nothing changed) when
    /// the transition is not allowed.
    pub fn apply(&mut self, event: Event, reason: Option<String>) -> Option<State> {
        let to = next(self.state, event)?;
        self.state = to;
        // A pending reboot-loop restart belongs to the state it was
        // decided in; a stop, terminate or failure ends it.
        self.restart_at = None;
        if reason.is_some() {
            self.state_reason = reason;
        }
        self.generation += 1;
        Some(to)
    }
}

/// A MAC for an instance: locally administered, unicast, from its id.
pub fn mac_for(instance_id: &str) -> String {
    let hex = instance_id.trim_start_matches("i-");
    let tail = &hex[hex.len().saturating_sub(10)..];
    let mut mac = String::from("02");
    for i in (0..tail.len()).step_by(2) {
        mac.push(':');
        mac.push_str(&tail[i..(i + 2).min(tail.len())]);
    }
    mac
}
