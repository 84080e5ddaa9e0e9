//! The security groups of an instance's network interface, as EC2 takes
//! them at `RunInstances` and at `ModifyInstanceAttribute --groups`
//! (`ModifyNetworkInterfaceAttribute`): one to five groups, each once,
//! each an id of the form `sg-…`; and the states in which they may be
//! changed.
//!
//! Whether each group exists is the store's to say, in the transaction
//! that writes the list.

use super::ids::{self, Kind};
use super::instance::State;

/// Most security groups per network interface (EC2's default quota).
pub const MAX_GROUPS: usize = 5;

/// Why a list of group ids is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupListError {
    #[error("security_group_ids: give 1-{MAX_GROUPS} groups, not {0}")]
    Count(usize),
    /// The VMM refuses a document naming a group twice, and EC2 refuses
    /// the list.
    #[error("security_group_ids names {0} more than once")]
    Duplicate(String),
    #[error("`{0}` is not a security group id (sg- and 8 or 17 hex digits)")]
    Malformed(String),
}

/// Checks `group_ids` against EC2's rules for an interface's groups.
pub fn check(group_ids: &[String]) -> Result<(), GroupListError> {
    if group_ids.is_empty() || group_ids.len() > MAX_GROUPS {
        return Err(GroupListError::Count(group_ids.len()));
    }
    for (i, id) in group_ids.iter().enumerate() {
        if !ids::is_valid(Kind::SecurityGroup, id) {
            return Err(GroupListError::Malformed(id.clone()));
        }
        if group_ids[..i].contains(id) {
            return Err(GroupListError::Duplicate(id.clone()));
        }
    }
    Ok(())
}

/// Whether an instance in `state` may be given other groups: while it has
/// its network interface, running or not (EC2 allows it on stopped
/// instances too); not once it is being, or has been, terminated.
pub fn may_change(state: State) -> bool {
    matches!(
        state,
        State::Pending | State::Running | State::Stopping | State::Stopped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_to_five_distinct_well_formed_groups() {
        assert_eq!(check(&ids(&["sg-0123abcd"])), Ok(()));
        assert_eq!(
            check(&ids(&[
                "sg-00000001",
                "sg-00000002",
                "sg-00000003",
                "sg-00000004",
                "sg-0123456789abcdef0"
            ])),
            Ok(())
        );
        assert_eq!(check(&[]), Err(GroupListError::Count(0)));
        let six: Vec<String> = (1..=6).map(|i| format!("sg-0000000{i}")).collect();
        assert_eq!(check(&six), Err(GroupListError::Count(6)));
        assert_eq!(
            check(&ids(&["sg-00000001", "sg-00000002", "sg-00000001"])),
            Err(GroupListError::Duplicate("sg-00000001".into()))
        );
        assert_eq!(
            check(&ids(&["sg-00000001", "web"])),
            Err(GroupListError::Malformed("web".into()))
        );
        assert_eq!(
            check(&ids(&["sg-0000000G"])),
            Err(GroupListError::Malformed("sg-0000000G".into()))
        );
    }

    #[test]
    fn groups_change_until_termination_starts() {
        let allowed: Vec<State> = State::ALL.into_iter().filter(|s| may_change(*s)).collect();
        assert_eq!(
            allowed,
            [
                State::Pending,
                State::Running,
                State::Stopping,
                State::Stopped
            ]
        );
    }
}
