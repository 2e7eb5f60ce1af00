//! Who must approve: a permit's `@review`, `@approvals` and `@wait`
//! annotations, read once when the policies load.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The approval a permit asks for before what it allows may run.
///
/// `@review("dba")` names one group; `@review("dba | security")` lets
/// approvers from any of them count (any-of); `@review("dba & security")`
/// needs approvers from each of them (all-of), one person counting for
/// one group only, so that two groups mean two people. `@approvals("2")`
/// asks for that many approvers (from each group, under all-of), and
/// `@wait("120s")` bounds how long a client is held (`s`, `m` or `h`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct ReviewRule {
    /// The permit that asks for it.
    pub policy: String,
    /// The reviewing groups.
    pub groups: Vec<String>,
    /// Whether each group must approve (all-of) rather than any.
    pub all_of: bool,
    /// Distinct approvers needed (per group under all-of).
    pub approvals: u32,
    /// How long a client waits, in seconds (`None`: the gateway's default).
    pub wait_secs: Option<u64>,
}

/// Approvers a rule may ask for: more is a typo, not a policy.
const MAX_APPROVALS: u32 = 10;

impl ReviewRule {
    /// Reads a permit's annotations. `Err` says what is wrong, for the
    /// policy loader to refuse the policy set with.
    pub fn from_annotations(
        policy: &str,
        review: &str,
        approvals: Option<&str>,
        wait: Option<&str>,
    ) -> Result<Self, String> {
        let (all_of, parts): (bool, Vec<&str>) = match (review.contains('&'), review.contains('|'))
        {
            (true, true) => {
                return Err(format!(
                    "@review(\"{review}\") mixes & and |: name groups with one of them"
                ))
            }
            (true, false) => (true, review.split('&').collect()),
            _ => (false, review.split('|').collect()),
        };
        let groups: Vec<String> = parts.iter().map(|g| g.trim().to_owned()).collect();
        if groups
            .iter()
            .any(|g| g.is_empty() || g.contains(char::is_whitespace))
        {
            return Err(format!(
                "@review(\"{review}\") must name groups, as \"dba\", \"dba | security\" or \"dba & security\""
            ));
        }
        let approvals = match approvals {
            None => 1,
            Some(text) => match text.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_APPROVALS).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "@approvals(\"{text}\") must be a number from 1 to {MAX_APPROVALS}"
                    ))
                }
            },
        };
        let wait_secs = wait
            .map(|w| parse_duration(w).map(|d| d.as_secs()))
            .transpose()
            .map_err(|e| format!("@wait(\"{}\"): {e}", wait.unwrap_or_default()))?;
        Ok(Self {
            policy: policy.to_owned(),
            groups,
            all_of,
            approvals,
            wait_secs,
        })
    }

    /// "dba", "2 approvals from dba | security", "1 approval from each of dba & security".
    pub fn describe(&self) -> String {
        let joined = self.groups.join(if self.all_of { " & " } else { " | " });
        let plural = if self.approvals == 1 { "" } else { "s" };
        match (self.all_of, self.approvals) {
            (false, 1) => joined,
            (false, n) => format!("{n} approval{plural} from {joined}"),
            (true, n) => format!("{n} approval{plural} from each of {joined}"),
        }
    }

    /// Whether `approvers` (each with the groups they were in when they
    /// approved) satisfy the rule. Each approver is a distinct person.
    pub fn satisfied_by(&self, approvers: &[Vec<String>]) -> bool {
        let member = |groups: &[String], g: &str| groups.iter().any(|x| x == g);
        if !self.all_of {
            let count = approvers
                .iter()
                .filter(|a| self.groups.iter().any(|g| member(a, g)))
                .count();
            return count >= self.approvals as usize;
        }
        // Each group needs `approvals` seats, each person fills one seat:
        // a bipartite matching (tiny: augmenting paths suffice).
        let seats: Vec<&str> = self
            .groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.as_str(), self.approvals as usize))
            .collect();
        let mut seat_of: Vec<Option<usize>> = vec![None; approvers.len()];
        let mut holder: Vec<Option<usize>> = vec![None; seats.len()];
        for seat in 0..seats.len() {
            let mut seen = vec![false; approvers.len()];
            if !augment(
                seat,
                &seats,
                approvers,
                &mut seen,
                &mut seat_of,
                &mut holder,
            ) {
                return false;
            }
        }
        true
    }

    /// Whether someone in `groups` may decide under this rule.
    pub fn admits(&self, groups: &[String]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }
}

/// Finds a person for `seat`, moving others to free seats if needed.
fn augment(
    seat: usize,
    seats: &[&str],
    approvers: &[Vec<String>],
    seen: &mut [bool],
    seat_of: &mut [Option<usize>],
    holder: &mut [Option<usize>],
) -> bool {
    for (person, groups) in approvers.iter().enumerate() {
        if seen[person] || !groups.iter().any(|g| g == seats[seat]) {
            continue;
        }
        seen[person] = true;
        let free = match seat_of[person] {
            None => true,
            Some(other) => augment(other, seats, approvers, seen, seat_of, holder),
        };
        if free {
            seat_of[person] = Some(seat);
            holder[seat] = Some(person);
            return true;
        }
    }
    false
}

/// "90s", "15m", "2h" or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 15m or 2h"))?;
    let secs = match unit.trim() {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?} is not a duration such as 90s, 15m or 2h")),
    };
    if secs == 0 {
        return Err(format!("{text:?} is no time at all"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn annotations_read_as_rules() {
        let r = ReviewRule::from_annotations("p", "dba", None, None).unwrap();
        assert_eq!(
            (r.groups.clone(), r.all_of, r.approvals),
            (groups(&["dba"]), false, 1)
        );
        let r = ReviewRule::from_annotations("p", "dba & sec", Some("2"), Some("2m")).unwrap();
        assert_eq!((r.all_of, r.approvals, r.wait_secs), (true, 2, Some(120)));
        assert!(ReviewRule::from_annotations("p", "dba & sec | x", None, None).is_err());
        assert!(ReviewRule::from_annotations("p", "", None, None).is_err());
        assert!(ReviewRule::from_annotations("p", "dba", Some("0"), None).is_err());
        assert!(ReviewRule::from_annotations("p", "dba", None, Some("soon")).is_err());
    }

    #[test]
    fn any_of_counts_distinct_members() {
        let r = ReviewRule::from_annotations("p", "dba | sec", Some("2"), None).unwrap();
        assert!(!r.satisfied_by(&[groups(&["dba"])]));
        assert!(!r.satisfied_by(&[groups(&["dba"]), groups(&["dev"])]));
        assert!(r.satisfied_by(&[groups(&["dba"]), groups(&["sec"])]));
    }

    #[test]
    fn all_of_needs_a_person_per_seat() {
        let r = ReviewRule::from_annotations("p", "dba & sec", None, None).unwrap();
        // One person in both groups fills one seat only.
        assert!(!r.satisfied_by(&[groups(&["dba", "sec"])]));
        assert!(r.satisfied_by(&[groups(&["dba", "sec"]), groups(&["dba"])]));
        assert!(!r.satisfied_by(&[groups(&["dba"]), groups(&["dba"])]));
    }
}
