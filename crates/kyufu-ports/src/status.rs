//! The status store: one record per application, moved only by atomic conditional transitions, plus
//! unique claims (idempotency keys, the dedupe index, the coupon registry).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kyufu_domain::{ReasonCode, Status};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AdapterError;

/// What the status lookup shows and what the pipeline moves. No personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationRecord {
    pub application_id: Uuid,
    pub program_id: String,
    pub status: Status,
    pub reasons: Vec<ReasonCode>,
    pub coupon_code: Option<String>,
    /// For `duplicate`: the application that came first.
    pub duplicate_of: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub history: Vec<StatusChange>,
}

impl ApplicationRecord {
    /// A fresh record in `received`.
    pub fn received(application_id: Uuid, program_id: &str, at: DateTime<Utc>) -> Self {
        ApplicationRecord {
            application_id,
            program_id: program_id.to_owned(),
            status: Status::Received,
            reasons: Vec::new(),
            coupon_code: None,
            duplicate_of: None,
            created_at: at,
            updated_at: at,
            history: vec![StatusChange { status: Status::Received, at, actor: "intake".to_owned() }],
        }
    }

    /// Applies `t` if the state machine and `t.from` allow it; the pure core every store shares.
    pub fn apply(&self, t: &Transition, at: DateTime<Utc>) -> TransitionOutcome {
        if self.status == t.to {
            return TransitionOutcome::AlreadyIn(self.clone());
        }
        if !t.from.contains(&self.status) || !self.status.can_become(t.to) {
            return TransitionOutcome::Refused(self.clone());
        }
        let mut next = self.clone();
        next.status = t.to;
        next.updated_at = at;
        if !t.reasons.is_empty() || t.to == Status::Approved {
            next.reasons = t.reasons.clone();
        }
        if t.coupon_code.is_some() {
            next.coupon_code = t.coupon_code.clone();
        }
        if t.duplicate_of.is_some() {
            next.duplicate_of = t.duplicate_of;
        }
        next.history.push(StatusChange { status: t.to, at, actor: t.actor.clone() });
        TransitionOutcome::Applied(next)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: Status,
    pub at: DateTime<Utc>,
    /// `intake`, a stage name, or `reviewer:<id>`.
    pub actor: String,
}

/// A conditional move: only from one of `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Vec<Status>,
    pub to: Status,
    pub reasons: Vec<ReasonCode>,
    pub coupon_code: Option<String>,
    pub duplicate_of: Option<Uuid>,
    pub actor: String,
}

impl Transition {
    pub fn new(from: &[Status], to: Status, actor: &str) -> Self {
        Transition {
            from: from.to_vec(),
            to,
            reasons: Vec::new(),
            coupon_code: None,
            duplicate_of: None,
            actor: actor.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The move happened; the new record.
    Applied(ApplicationRecord),
    /// The record was already in the target status (a replay); nothing changed.
    AlreadyIn(ApplicationRecord),
    /// The record is in a status the move does not start from; nothing changed.
    Refused(ApplicationRecord),
    NotFound,
}

/// An idempotency key and a fingerprint of the request it protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub key: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The idempotency key was used before, for `application_id`; `same_request` tells whether the
    /// fingerprints match. Nothing was written.
    Existing { application_id: Uuid, same_request: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and now belongs to the caller (or already did).
    Won,
    /// The key belongs to someone else.
    Held { owner: String },
}

/// A time-limited claim: who holds a key and until when (stored as the claim's owner,
/// `holder|until-in-unix-milliseconds`; holders never contain `|`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub until: DateTime<Utc>,
}

impl Lease {
    pub fn encode(&self) -> String {
        format!("{}|{}", self.holder, self.until.timestamp_millis())
    }

    /// Reads a stored owner; one without a time (a plain claim) never runs out.
    pub fn decode(owner: &str) -> Lease {
        match owner.rsplit_once('|') {
            Some((holder, ms)) => Lease {
                holder: holder.to_owned(),
                until: ms.parse().ok().and_then(DateTime::from_timestamp_millis).unwrap_or(DateTime::<Utc>::MIN_UTC),
            },
            None => Lease { holder: owner.to_owned(), until: DateTime::<Utc>::MAX_UTC },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease now, until the time asked for.
    Won(Lease),
    /// Someone else holds an unexpired lease.
    Held(Lease),
}

#[async_trait]
pub trait StatusStore: Send + Sync + 'static {
    /// Stores a new record, atomically with the idempotency key when one is given: either both
    /// are written or neither. Creating an id that exists returns `AlreadyExists`.
    async fn create(
        &self,
        record: &ApplicationRecord,
        idempotency: Option<&IdempotencyClaim>,
    ) -> Result<CreateOutcome, AdapterError>;

    async fn get(&self, id: Uuid) -> Result<Option<ApplicationRecord>, AdapterError>;

    /// Atomic conditional transition (see `ApplicationRecord::apply`).
    async fn transition(&self, id: Uuid, t: &Transition) -> Result<TransitionOutcome, AdapterError>;

    /// Claims `key` in `namespace` for `owner` (SET NX). Claiming again as the same owner wins.
    async fn claim(&self, namespace: &str, key: &str, owner: &str) -> Result<Claim, AdapterError>;

    /// Claims every key of `keys` in `namespace` for `owner`, in one atomic step where the store
    /// allows it; one answer per key, in order. Keys already held by others stay theirs.
    async fn claim_many(&self, namespace: &str, keys: &[String], owner: &str) -> Result<Vec<Claim>, AdapterError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.claim(namespace, k, owner).await?);
        }
        Ok(out)
    }

    /// Claims `key` like `claim`, for at least `ttl`: a store that can expire keys forgets the
    /// claim after it (spent admission passes need remembering only until the pass expires); one
    /// that cannot keeps it, which only costs space. Claiming again as the same owner wins.
    async fn claim_expiring(
        &self,
        namespace: &str,
        key: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<Claim, AdapterError> {
        let _ = ttl;
        self.claim(namespace, key, owner).await
    }

    /// Who holds `key` in `namespace`, if anyone; reads only, never claims.
    async fn claimed_by(&self, namespace: &str, key: &str) -> Result<Option<String>, AdapterError>;

    /// Releases `key` if `owner` holds it; returns whether it did.
    async fn release(&self, namespace: &str, key: &str, owner: &str) -> Result<bool, AdapterError>;

    /// Hands `key` from owner `from` to owner `to` (takes it for `to` when it is free): `Won` when
    /// `to` holds it afterwards, `Held` with the owner otherwise (someone else's claim is never
    /// taken). One atomic step where the store allows it; the default releases, then claims.
    async fn reassign(&self, namespace: &str, key: &str, from: &str, to: &str) -> Result<Claim, AdapterError> {
        self.release(namespace, key, from).await?;
        self.claim(namespace, key, to).await
    }

    /// Compare-and-set of a claim: `key` becomes `owner`'s only if its current owner is
    /// `expected` (`None`: free). Returns whether it did. Stores that can do it in one atomic step
    /// override this; the default releases then claims, which never gives one key to two owners
    /// but may lose the key to a racer between the two steps.
    async fn replace_claim(&self, namespace: &str, key: &str, expected: Option<&str>, owner: &str) -> Result<bool, AdapterError> {
        if let Some(old) = expected {
            if old == owner {
                return Ok(self.claimed_by(namespace, key).await?.as_deref() == Some(owner));
            }
            if !self.release(namespace, key, old).await? {
                return Ok(false);
            }
        }
        Ok(self.claim(namespace, key, owner).await? == Claim::Won)
    }

    /// `replace_claim` for a claim that means nothing after `until`: a store that can expire keys
    /// forgets it then (leases and sessions would otherwise pile up); one that cannot keeps it.
    async fn replace_claim_until(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&str>,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, AdapterError> {
        let _ = until;
        self.replace_claim(namespace, key, expected, owner).await
    }

    /// Takes or renews a lease: `key` becomes `holder`'s until `until` when it is free, its lease
    /// ran out before `now`, or `holder` has it already. Built on `claimed_by` and
    /// `replace_claim`, so two holders never hold one key at once.
    async fn take_lease(&self, namespace: &str, key: &str, holder: &str, now: DateTime<Utc>, until: DateTime<Utc>) -> Result<LeaseOutcome, AdapterError> {
        let owner = Lease { holder: holder.to_owned(), until }.encode();
        for _ in 0..4 {
            let current = self.claimed_by(namespace, key).await?;
            if let Some(cur) = &current {
                let lease = Lease::decode(cur);
                if lease.holder != holder && lease.until > now {
                    return Ok(LeaseOutcome::Held(lease));
                }
            }
            if self.replace_claim_until(namespace, key, current.as_deref(), &owner, until).await? {
                return Ok(LeaseOutcome::Won(Lease { holder: holder.to_owned(), until }));
            }
        }
        match self.lease_of(namespace, key).await? {
            Some(l) if l.holder != holder => Ok(LeaseOutcome::Held(l)),
            _ => Err(AdapterError::Unavailable("lease too contended; retry".into())),
        }
    }

    /// The lease on `key`, expired or not; reads only.
    async fn lease_of(&self, namespace: &str, key: &str) -> Result<Option<Lease>, AdapterError> {
        Ok(self.claimed_by(namespace, key).await?.map(|o| Lease::decode(&o)))
    }

    /// Ends `holder`'s lease on `key`; returns whether there was one.
    async fn end_lease(&self, namespace: &str, key: &str, holder: &str) -> Result<bool, AdapterError> {
        for _ in 0..4 {
            let Some(cur) = self.claimed_by(namespace, key).await? else { return Ok(false) };
            if Lease::decode(&cur).holder != holder {
                return Ok(false);
            }
            if self.release(namespace, key, &cur).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Up to `limit` records in `status`, oldest `updated_at` first (review queue, reconciliation).
    async fn list_by_status(&self, status: Status, limit: usize) -> Result<Vec<ApplicationRecord>, AdapterError>;

    /// How many records are in each status.
    async fn count_by_status(&self) -> Result<Vec<(Status, u64)>, AdapterError>;
}
