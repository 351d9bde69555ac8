//! Signing keys kept in the database, shared by every instance and rotated on a schedule.
//!
//! Enabled with [`ServerConfig::signing_key_store`](crate::ServerConfig::signing_key_store).
//! Each key is a row of `sentri_signing_keys`: its kid, algorithm, the private key sealed
//! with AES-256-GCM under a key-encryption key ([`Sealer`]; its id is stored with the
//! value, so the KEK itself can rotate), its public JWK, and its times: created,
//! published from, signing from, retired at, revoked at.
//!
//! Every instance reads the same rows and derives the same key set from them and the
//! time (see `plan`): the newest key whose `sign_from` has come signs; every key whose
//! `publish_from` has come is published and verifies, until its successor has signed for
//! the longest token lifetime plus one `refresh_interval` (an instance that has not
//! reloaded yet still signs with it); revoked keys are gone. A new key is created
//! `publish_ahead` before the current one has signed for `rotation_period`, and signs
//! only from then on, so client apps that cache the JWKS fetch it before they meet it.
//! Two instances that decide at once that a key is due both insert the same
//! `generation`, which is unique: exactly one insert wins, the other reloads.
//!
//! Instances reload the rows every `refresh_interval` and, at most once per
//! `unknown_kid_cooldown`, when a token names a kid they do not know.

mod plan;
mod schema;
mod store;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use schema::MIGRATIONS;

/// Starts reloading `store` every refresh interval, once per store, on the current
/// tokio runtime; the task ends when the store is dropped. Failures are logged and the
/// keys in place stay.
pub(crate) fn start_refresh(store: &Arc<KeyStore>) {
    if store
        .refreshing
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        store
            .refreshing
            .store(false, std::sync::atomic::Ordering::Release);
        return;
    };
    let weak = Arc::downgrade(store);
    let every = store.config.refresh_interval;
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(store) = weak.upgrade() else { return };
            if let Err(err) = store.refresh().await {
                tracing::warn!(error = %err, "sentri: reloading the signing keys failed");
            }
        }
    });
}

use crate::core::clock::Clock;
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::seal::Sealer;
use crate::db::Database;
use crate::token::{Algorithm, SigningKey, TokenService};
use plan::{KeyTimes, Plan, Schedule};
use store::KeyRow;

/// Default time a key signs before the next one takes over: 30 days.
pub const DEFAULT_ROTATION_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default time a new key is published before it signs: 1 hour (longer than the
/// 10-minute JWKS cache of sentri's client mode plus the refresh interval).
pub const DEFAULT_PUBLISH_AHEAD: Duration = Duration::from_secs(3600);
/// Default interval at which every instance reloads the key set: 60 seconds.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Longest `Cache-Control: max-age` of the JWKS (`/keys`): 5 minutes, also without a
/// key store. With one it is shorter when `publish_ahead` is short (see the
/// `publish_ahead` field of [`KeyStoreConfig`]).
pub const MAX_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Default shortest time between two reloads caused by unknown kids: 1 second.
pub const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(1);

/// Settings of the database key store. Build it with [`KeyStoreConfig::new`] and the
/// builder methods; every default is documented on its field.
///
/// ```
/// use sentri::core::seal::Sealer;
/// use sentri::keystore::KeyStoreConfig;
/// use sentri::token::Algorithm;
/// let kek = Sealer::new("kek-2026", [7u8; 32])?;
/// let store = KeyStoreConfig::new(kek)
///     .algorithm(Algorithm::EdDSA)
///     .rotation_period(std::time::Duration::from_secs(7 * 24 * 3600));
/// # Ok::<(), sentri::SentriError>(())
/// ```
#[non_exhaustive]
#[derive(Clone)]
pub struct KeyStoreConfig {
    /// Seals the private keys at rest (AES-256-GCM, key-encryption key with an id).
    pub sealer: Arc<Sealer>,
    /// Algorithm of new keys (default `ES256`; any asymmetric one: `RS256/384/512`,
    /// `ES256`, `EdDSA`).
    pub algorithm: Algorithm,
    /// How long each key signs (default [`DEFAULT_ROTATION_PERIOD`], 30 days).
    pub rotation_period: Duration,
    /// How long before it signs a new key is published (default
    /// [`DEFAULT_PUBLISH_AHEAD`], 1 hour; keep it above the JWKS cache lifetime of
    /// your client apps plus `refresh_interval`). `/keys` answers with a
    /// `Cache-Control: max-age` of half of `publish_ahead − refresh_interval` (at most
    /// [`MAX_JWKS_MAX_AGE`], 5 min), so clients that honour it fetch a new key before
    /// they meet it.
    pub publish_ahead: Duration,
    /// How often every instance reloads the keys (default [`DEFAULT_REFRESH_INTERVAL`],
    /// 60 s): the longest another instance keeps verifying a revoked key (and keeps
    /// signing with it, or with a key whose successor's time has come; an old key
    /// therefore stays published this much longer than its tokens' lifetime).
    pub refresh_interval: Duration,
    /// Shortest time between reloads caused by a token with an unknown kid (default
    /// [`DEFAULT_UNKNOWN_KID_COOLDOWN`], 1 s).
    pub unknown_kid_cooldown: Duration,
}

impl fmt::Debug for KeyStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStoreConfig")
            .field("sealer", &self.sealer)
            .field("algorithm", &self.algorithm)
            .field("rotation_period", &self.rotation_period)
            .field("publish_ahead", &self.publish_ahead)
            .field("refresh_interval", &self.refresh_interval)
            .field("unknown_kid_cooldown", &self.unknown_kid_cooldown)
            .finish()
    }
}

impl KeyStoreConfig {
    /// A key store whose private keys are sealed by `sealer`, with every default.
    pub fn new(sealer: Sealer) -> Self {
        Self {
            sealer: Arc::new(sealer),
            algorithm: Algorithm::ES256,
            rotation_period: DEFAULT_ROTATION_PERIOD,
            publish_ahead: DEFAULT_PUBLISH_AHEAD,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            unknown_kid_cooldown: DEFAULT_UNKNOWN_KID_COOLDOWN,
        }
    }

    /// Sets the algorithm of new keys.
    pub fn algorithm(mut self, alg: Algorithm) -> Self {
        self.algorithm = alg;
        self
    }

    /// Sets how long each key signs.
    pub fn rotation_period(mut self, period: Duration) -> Self {
        self.rotation_period = period;
        self
    }

    /// Sets how long before it signs a new key is published.
    pub fn publish_ahead(mut self, ahead: Duration) -> Self {
        self.publish_ahead = ahead;
        self
    }

    /// Sets how often every instance reloads the keys.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Sets the shortest time between reloads caused by unknown kids.
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    fn check(&self) -> Result<()> {
        let asymmetric = matches!(
            self.algorithm,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::ES256
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(SentriError::configuration(
                "signing key store: the algorithm must be asymmetric (RS*, ES256 or EdDSA)",
            ));
        }
        if self.rotation_period <= self.publish_ahead {
            return Err(SentriError::configuration(
                "signing key store: rotation_period must be longer than publish_ahead",
            ));
        }
        if self.refresh_interval.is_zero() || self.refresh_interval >= self.publish_ahead {
            return Err(SentriError::configuration(
                "signing key store: refresh_interval must be positive and shorter than publish_ahead",
            ));
        }
        Ok(())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Associated data binding a sealed private key to its row.
fn aad(kid: &str) -> Vec<u8> {
    format!("sentri-signing-key:{kid}").into_bytes()
}

/// The database key store of one instance: loads the shared rows into its
/// [`TokenService`], creates keys when due, rotates and revokes.
pub(crate) struct KeyStore {
    db: Database,
    config: KeyStoreConfig,
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    tokens: TokenService,
    /// Private keys already opened, by kid (opening is not repeated on every reload).
    opened: Mutex<HashMap<String, SigningKey>>,
    /// One reload at a time; holds when the last unknown-kid reload ran (ms).
    reload: tokio::sync::Mutex<Option<i64>>,
    /// Set once the background refresh runs.
    refreshing: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// A key store for `tokens` (`token_lifetime`: the longest token it signs lives,
    /// leeway included).
    pub(crate) fn new(
        db: Database,
        config: KeyStoreConfig,
        clock: Arc<dyn Clock>,
        tokens: TokenService,
        token_lifetime: Duration,
    ) -> Result<Self> {
        config.check()?;
        let schedule = Schedule {
            period: millis(config.rotation_period),
            publish_ahead: millis(config.publish_ahead),
            // An instance that has not reloaded since the successor's `sign_from` still
            // signs with the old key, for up to one refresh interval: its tokens live
            // that much longer than the successor's `sign_from` + their lifetime.
            token_lifetime: millis(token_lifetime.saturating_add(config.refresh_interval)),
        };
        Ok(Self {
            db,
            config,
            schedule,
            clock,
            tokens,
            opened: Mutex::new(HashMap::new()),
            reload: tokio::sync::Mutex::new(None),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Reloads the rows, creates a key when one is due (exactly one instance wins), and
    /// installs the resulting key set. A private key that does not open with the
    /// configured key-encryption keys is a `CONFIGURATION_ERROR`.
    pub(crate) async fn refresh(&self) -> Result<()> {
        let _one = self.reload.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<()> {
        let now = self.clock.now_ms();
        let mut rows = self.db.signing_key_rows().await?;
        let mut plan = plan::plan(&times(&rows), now, self.schedule);
        if let Some((generation, publish_from, sign_from)) = plan.due {
            self.create(generation, publish_from, sign_from, &rows)
                .await?;
            rows = self.db.signing_key_rows().await?;
            plan = plan::plan(&times(&rows), self.clock.now_ms(), self.schedule);
        }
        self.install(&rows, &plan)
    }

    /// After a token named `kid` this instance does not know: reloads, at most once per
    /// cooldown. `true` when the kid is known afterwards.
    pub(crate) async fn refresh_for_unknown_kid(&self, kid: &str) -> Result<bool> {
        let mut last = self.reload.lock().await;
        if self.tokens.knows_kid(kid) {
            return Ok(true);
        }
        let now = self.clock.now_ms();
        let cooldown = millis(self.config.unknown_kid_cooldown);
        let wall = crate::core::clock::system_now_ms();
        if last.is_some_and(|at| wall.saturating_sub(at) < cooldown) {
            return Ok(false);
        }
        *last = Some(wall);
        tracing::debug!(now, "sentri: unknown kid; reloading the signing keys");
        self.refresh_locked().await?;
        Ok(self.tokens.knows_kid(kid))
    }

    /// Creates a key now that signs from `publish_ahead` on (manual rotation).
    pub(crate) async fn rotate(&self) -> Result<String> {
        let _one = self.reload.lock().await;
        let now = self.clock.now_ms();
        let rows = self.db.signing_key_rows().await?;
        let sign_from = now.saturating_add(self.schedule.publish_ahead);
        let kid = self
            .create(next_generation(&rows), now, sign_from, &rows)
            .await?;
        self.refresh_locked().await?;
        kid.ok_or_else(|| {
            SentriError::new(
                ErrorCode::ServiceUnavailable,
                "another instance rotated the signing key at the same time; retry",
            )
        })
    }

    /// Revokes `kid` at once in this instance (elsewhere within the refresh interval);
    /// when it was signing, a new key signs from now. `false` when unknown or already
    /// revoked.
    pub(crate) async fn revoke(&self, kid: &str) -> Result<bool> {
        let _one = self.reload.lock().await;
        let now = self.clock.now_ms();
        if !self.db.revoke_signing_key(kid, now).await? {
            return Ok(false);
        }
        tracing::warn!(kid, "sentri: signing key revoked");
        let rows = self.db.signing_key_rows().await?;
        let plan = plan::plan(&times(&rows), now, self.schedule);
        let was_signer = self.tokens.current_key().kid() == kid;
        if was_signer || plan.signer.is_none() {
            // A fresh key that signs at once; instances and clients that meet its kid
            // first reload (rate-limited). Another instance reloading meanwhile sees the
            // key due too: whichever inserts first made the replacement, and the other
            // stops there (it must not add a second one under the next generation).
            let revoked = rows
                .iter()
                .find(|r| r.kid == kid)
                .map_or(0, |r| r.generation);
            for _ in 0..3 {
                let rows = self.db.signing_key_rows().await?;
                let at = self.clock.now_ms();
                if rows
                    .iter()
                    .any(|r| r.generation > revoked && r.revoked_at.is_none() && r.sign_from <= at)
                {
                    break;
                }
                if self
                    .create(next_generation(&rows), now, now, &rows)
                    .await?
                    .is_some()
                {
                    break;
                }
            }
        }
        self.refresh_locked().await?;
        Ok(true)
    }

    /// Generates, seals and inserts a key of `generation`; `None` when another instance
    /// took that generation first. Records when the key it succeeds retires.
    async fn create(
        &self,
        generation: i64,
        publish_from: i64,
        sign_from: i64,
        rows: &[KeyRow],
    ) -> Result<Option<String>> {
        let key = SigningKey::generate(self.config.algorithm).await?;
        let pem = key
            .to_pkcs8_pem()
            .ok_or_else(|| SentriError::configuration("signing key store: symmetric key"))?;
        let jwk = key
            .public_jwk()
            .ok_or_else(|| SentriError::configuration("signing key store: symmetric key"))?;
        let kid = key.kid().to_owned();
        let row = KeyRow {
            kid: kid.clone(),
            generation,
            algorithm: format!("{:?}", key.algorithm()),
            private_key: self.config.sealer.seal(pem.as_bytes(), &aad(&kid))?,
            public_jwk: jwk.to_string(),
            created_at: self.clock.now_ms(),
            publish_from,
            sign_from,
            retire_at: None,
            revoked_at: None,
        };
        if !self.db.insert_signing_key(&row).await? {
            tracing::debug!(
                generation,
                "sentri: another instance created this signing key"
            );
            return Ok(None);
        }
        tracing::info!(kid = %kid, generation, sign_from, "sentri: new signing key");
        if let Some(previous) = rows
            .iter()
            .filter(|r| r.revoked_at.is_none() && r.sign_from <= sign_from)
            .max_by_key(|r| (r.sign_from, r.generation))
        {
            let retire = sign_from.saturating_add(self.schedule.token_lifetime);
            self.db
                .set_signing_key_retire_at(&previous.kid, retire)
                .await?;
        }
        self.opened
            .lock()
            .map_err(|_| SentriError::configuration("signing key cache poisoned"))?
            .insert(kid.clone(), key);
        Ok(Some(kid))
    }

    /// Opens the keys the plan publishes and installs them (signer first).
    fn install(&self, rows: &[KeyRow], plan: &Plan) -> Result<()> {
        let Some(signer) = &plan.signer else {
            return Err(SentriError::configuration(
                "signing key store: no key can sign (every key revoked?)",
            ));
        };
        debug_assert_eq!(plan.published.first(), Some(signer));
        let mut keys = Vec::with_capacity(plan.published.len());
        for kid in &plan.published {
            if let Some(row) = rows.iter().find(|r| &r.kid == kid) {
                keys.push(self.open(row)?);
            }
        }
        self.tokens.replace_keys(keys)
    }

    /// The key of `row`, opened once and cached.
    fn open(&self, row: &KeyRow) -> Result<SigningKey> {
        let mut opened = self
            .opened
            .lock()
            .map_err(|_| SentriError::configuration("signing key cache poisoned"))?;
        if let Some(key) = opened.get(&row.kid) {
            return Ok(key.clone());
        }
        let alg: Algorithm = row.algorithm.parse().map_err(|_| {
            SentriError::configuration("signing key store: unknown algorithm in a stored key")
        })?;
        let pem = self
            .config
            .sealer
            .open(&row.private_key, &aad(&row.kid))
            .map_err(|_| {
                SentriError::configuration(
                    "signing key store: a stored private key does not open with the configured key-encryption key",
                )
            })?;
        let pem = String::from_utf8(pem)
            .map_err(|_| SentriError::configuration("signing key store: malformed stored key"))?;
        let key = SigningKey::from_pem(alg, &pem)?;
        if key.kid() != row.kid {
            return Err(SentriError::configuration(
                "signing key store: a stored key does not match its kid",
            ));
        }
        opened.insert(row.kid.clone(), key.clone());
        Ok(key)
    }

    /// How long a client may cache the JWKS (`Cache-Control: max-age` of `/keys`): half
    /// of `publish_ahead − refresh_interval`, at most [`MAX_JWKS_MAX_AGE`]. A client that
    /// honours it and verifies tokens meanwhile has fetched a new key before any instance
    /// signs with it: the key is on every instance `refresh_interval` after it is
    /// created, and signs `publish_ahead` after that.
    pub(crate) fn jwks_max_age(&self) -> Duration {
        let spare = self
            .config
            .publish_ahead
            .saturating_sub(self.config.refresh_interval);
        Duration::from_secs((spare / 2).as_secs()).min(MAX_JWKS_MAX_AGE)
    }

    /// Every stored key, oldest generation first.
    pub(crate) async fn list(&self) -> Result<Vec<SigningKeyInfo>> {
        Ok(self
            .db
            .signing_key_rows()
            .await?
            .into_iter()
            .map(|r| SigningKeyInfo {
                kid: r.kid,
                generation: r.generation,
                algorithm: r.algorithm,
                created_at: r.created_at,
                publish_from: r.publish_from,
                sign_from: r.sign_from,
                retire_at: r.retire_at,
                revoked_at: r.revoked_at,
                sealed_private_key: r.private_key,
                public_jwk: r.public_jwk,
            })
            .collect())
    }
}

/// One stored signing key, as [`ServerAuth::signing_keys`](crate::ServerAuth::signing_keys)
/// lists it (times in unix epoch milliseconds). `Debug` leaves out the sealed key.
#[derive(Clone)]
#[non_exhaustive]
pub struct SigningKeyInfo {
    /// The key id (RFC 7638 thumbprint).
    pub kid: String,
    /// Its place in the sequence of keys (unique).
    pub generation: i64,
    /// The JWS algorithm (`ES256`, `RS256`, …).
    pub algorithm: String,
    /// When it was created.
    pub created_at: i64,
    /// From when it is published in the JWKS.
    pub publish_from: i64,
    /// From when it signs (until a newer key signs).
    pub sign_from: i64,
    /// When it stops being published, once a successor exists.
    pub retire_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// The private key as stored: `v1.<kek id>.<AES-256-GCM ciphertext>`.
    pub sealed_private_key: String,
    /// The public JWK as stored.
    pub public_jwk: String,
}

impl fmt::Debug for SigningKeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyInfo")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("publish_from", &self.publish_from)
            .field("sign_from", &self.sign_from)
            .field("retire_at", &self.retire_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

fn next_generation(rows: &[KeyRow]) -> i64 {
    rows.iter().map(|r| r.generation).max().unwrap_or(0) + 1
}

fn times(rows: &[KeyRow]) -> Vec<KeyTimes> {
    rows.iter()
        .map(|r| KeyTimes {
            kid: r.kid.clone(),
            generation: r.generation,
            publish_from: r.publish_from,
            sign_from: r.sign_from,
            revoked_at: r.revoked_at,
        })
        .collect()
}
