//! The key timeline: which key signs, which keys are published, and when a new one is
//! due. Pure functions of the stored rows and the time, so every instance that reads the
//! same rows at the same time reaches the same answer.

/// The times of one stored key (unix epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyTimes {
    pub(crate) kid: String,
    pub(crate) generation: i64,
    pub(crate) publish_from: i64,
    pub(crate) sign_from: i64,
    pub(crate) revoked_at: Option<i64>,
}

/// The schedule settings (milliseconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// How long a key signs before the next one takes over.
    pub(crate) period: i64,
    /// How long before it signs a new key is published.
    pub(crate) publish_ahead: i64,
    /// The longest a token signed by a key may stay valid (refresh lifetime + leeway).
    pub(crate) token_lifetime: i64,
}

/// What the rows say at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The kid that signs now (`None` on an empty store or with every key revoked).
    pub(crate) signer: Option<String>,
    /// Every kid that verifies and is published now, the signer first.
    pub(crate) published: Vec<String>,
    /// The next key to create, when one is due: `(generation, publish_from, sign_from)`.
    pub(crate) due: Option<(i64, i64, i64)>,
}

/// The plan at `now` for `rows` (any order, revoked ones included).
pub(crate) fn plan(rows: &[KeyTimes], now: i64, schedule: Schedule) -> Plan {
    let next_generation = rows.iter().map(|k| k.generation).max().unwrap_or(0) + 1;
    let mut active: Vec<&KeyTimes> = rows.iter().filter(|k| k.revoked_at.is_none()).collect();
    active.sort_by_key(|k| (k.sign_from, k.generation));
    // The newest key whose signing time has come; else the earliest one (a key that
    // another instance, whose clock runs slightly ahead, made to sign "now").
    let signer = active
        .iter()
        .rev()
        .find(|k| k.sign_from <= now)
        .or_else(|| active.first())
        .copied();
    let Some(signer) = signer else {
        // An empty store, or every key revoked: a key that signs at once (nobody can
        // have cached a key set that lacks it and verifies anything).
        return Plan {
            signer: None,
            published: Vec::new(),
            due: Some((next_generation, now, now)),
        };
    };
    let retired = |i: usize| {
        active
            .get(i + 1)
            .is_some_and(|next| next.sign_from.saturating_add(schedule.token_lifetime) <= now)
    };
    let mut published = vec![signer.kid.clone()];
    published.extend(
        active
            .iter()
            .enumerate()
            .filter(|(i, k)| k.kid != signer.kid && k.publish_from <= now && !retired(*i))
            .map(|(_, k)| k.kid.clone()),
    );
    let latest = active.last().copied().unwrap_or(signer);
    let next_sign = latest.sign_from.saturating_add(schedule.period);
    let due = (now >= next_sign.saturating_sub(schedule.publish_ahead)).then(|| {
        let sign_from = next_sign.max(now.saturating_add(schedule.publish_ahead));
        (next_generation, now, sign_from)
    });
    Plan {
        signer: Some(signer.kid.clone()),
        published,
        due,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;
    const S: Schedule = Schedule {
        period: 30 * D,
        publish_ahead: H,
        token_lifetime: 7 * D,
    };

    fn key(kid: &str, generation: i64, publish_from: i64, sign_from: i64) -> KeyTimes {
        KeyTimes {
            kid: kid.into(),
            generation,
            publish_from,
            sign_from,
            revoked_at: None,
        }
    }

    #[test]
    fn an_empty_store_needs_a_key_that_signs_at_once() {
        let p = plan(&[], 5, S);
        assert_eq!(p.signer, None);
        assert_eq!(p.due, Some((1, 5, 5)));
    }

    #[test]
    fn a_rotation_publishes_ahead_signs_then_retires_the_old_key() {
        let a = key("a", 1, 0, 0);
        assert_eq!(plan(std::slice::from_ref(&a), 30 * D - H - 1, S).due, None);
        let p = plan(std::slice::from_ref(&a), 30 * D - H, S);
        assert_eq!(p.due, Some((2, 30 * D - H, 30 * D)));
        let b = key("b", 2, 30 * D - H, 30 * D);
        let rows = [a, b];
        // Published, not yet signing.
        let p = plan(&rows, 30 * D - H, S);
        assert_eq!(
            (p.signer.as_deref(), p.published.clone()),
            (Some("a"), vec!["a".into(), "b".into()])
        );
        // Signing; the old key stays while its tokens live.
        let p = plan(&rows, 30 * D, S);
        assert_eq!(
            (p.signer.as_deref(), p.published.clone()),
            (Some("b"), vec!["b".into(), "a".into()])
        );
        let p = plan(&rows, 37 * D - 1, S);
        assert_eq!(p.published, vec!["b".to_owned(), "a".to_owned()]);
        let p = plan(&rows, 37 * D, S);
        assert_eq!(p.published, vec!["b".to_owned()]);
    }

    #[test]
    fn a_key_made_by_a_clock_slightly_ahead_signs_at_once() {
        let p = plan(&[key("a", 1, 1_000, 1_000)], 990, S);
        assert_eq!((p.signer.as_deref(), p.due), (Some("a"), None));
    }

    #[test]
    fn a_revoked_signer_leaves_a_key_due_at_once_and_is_never_published() {
        let mut a = key("a", 1, 0, 0);
        a.revoked_at = Some(10);
        let p = plan(&[a.clone()], 10, S);
        assert_eq!((p.signer, p.due), (None, Some((2, 10, 10))));
        let rows = [a, key("c", 2, 10, 10)];
        let p = plan(&rows, 10, S);
        assert_eq!(p.published, vec!["c".to_owned()]);
    }
}
