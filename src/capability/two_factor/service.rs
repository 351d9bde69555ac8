//! The two-factor service: enrolment, verification (TOTP with replay protection, backup
//! codes), the login challenge and the per-user limit.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::store::{ChallengeRow, Device, Store};
use super::totp;
use super::{STEP_NAME, TwoFactor};
use crate::capability::{Challenge, Core, FirstFactor, SignIn};
use crate::core::clock::duration_ms;
use crate::core::crypto::{random_token, sha256_hex};
use crate::core::error::{ErrorCode, Result, SentriError};
use crate::core::events::{AuthEvent, AuthEventKind};
use crate::core::principal::{Assurance, AuthUser, SessionMeta};

/// The bytes of a TOTP secret (160 bits, RFC 4226's recommendation).
const SECRET_BYTES: usize = 20;
/// The random bytes of a backup code (64 bits).
const BACKUP_BYTES: usize = 8;

/// A fresh enrolment: shown once, never again.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    /// The new device's id (confirm it with a code).
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// The secret, base32 (for manual entry).
    pub secret: String,
    /// The `otpauth://totp/...` URL (for a QR code).
    pub otpauth_url: String,
}

impl fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrolment")
            .field("device_id", &self.device_id)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("otpauth_url", &"<redacted>")
            .finish()
    }
}

/// Which kind of second factor a code was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Totp,
    Backup,
}

/// The two-factor operations. Cheap to clone.
#[derive(Clone)]
pub struct TwoFactorService {
    pub(super) config: Arc<TwoFactor>,
    pub(super) core: Core,
    pub(super) store: Store,
}

impl fmt::Debug for TwoFactorService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoFactorService").finish_non_exhaustive()
    }
}

fn invalid_code() -> SentriError {
    SentriError::new(ErrorCode::TwoFactorInvalid, "Invalid second-factor code")
}

fn invalid_token() -> SentriError {
    SentriError::new(ErrorCode::TwoFactorInvalid, "Invalid or expired 2FA token")
}

/// A 6-digit code without spaces, or `None`.
fn totp_shape(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == totp::DIGITS as usize && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// The stored hash of a backup code of `user_id` (`None`: not shaped like one).
fn backup_hash(user_id: &str, code: &str) -> Option<String> {
    let norm: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let shaped = norm.len() == BACKUP_BYTES * 2 && norm.bytes().all(|b| b.is_ascii_hexdigit());
    shaped.then(|| sha256_hex(&format!("sentri-backup-v1\0{user_id}\0{norm}")))
}

/// A fresh backup code, `xxxx-xxxx-xxxx-xxxx` (64 random bits, hex).
fn new_backup_code() -> Result<String> {
    let mut bytes = [0u8; BACKUP_BYTES];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| SentriError::internal(std::io::Error::other("no randomness")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let groups: Vec<&str> = (0..4).map(|i| &hex[i * 4..i * 4 + 4]).collect();
    Ok(groups.join("-"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn device_aad(device_id: &str) -> Vec<u8> {
    format!("totp:{device_id}").into_bytes()
}

impl TwoFactorService {
    fn now(&self) -> i64 {
        self.core.now_ms()
    }

    fn emit(&self, kind: AuthEventKind, user_id: &str, meta: Option<&SessionMeta>) {
        let event = AuthEvent::new(kind, self.now()).user(user_id);
        self.core.emit(match meta {
            Some(m) => event.meta(m.clone()),
            None => event,
        });
    }

    /// `true` when the user has at least one confirmed device (2FA is on).
    pub async fn is_enabled(&self, user_id: &str) -> Result<bool> {
        let devices = self.store.devices(user_id).await?;
        Ok(devices.iter().any(|d| d.confirmed_at.is_some()))
    }

    /// Starts enrolling a TOTP device after checking the password. A user who already
    /// has 2FA needs a session signed in with it (`TWO_FACTOR_REQUIRED`).
    pub async fn enroll(
        &self,
        user: &AuthUser,
        password: &str,
        name: Option<String>,
        assurance: Option<&Assurance>,
    ) -> Result<Enrolment> {
        let name = name.unwrap_or_else(|| "Authenticator".to_owned());
        if name.trim().is_empty() || name.len() > 64 {
            return Err(SentriError::validation("name: 1 to 64 bytes"));
        }
        self.core
            .identity
            .check_current_password(&user.id, password)
            .await?;
        let now = self.now();
        let stale = now.saturating_sub(duration_ms(self.config.enroll_ttl));
        self.store.delete_stale_devices(&user.id, stale).await?;
        let devices = self.store.devices(&user.id).await?;
        if devices.iter().any(|d| d.confirmed_at.is_some())
            && !assurance.is_some_and(Assurance::has_second_factor)
        {
            return Err(SentriError::new(
                ErrorCode::TwoFactorRequired,
                "Adding a device requires a session signed in with a second factor",
            ));
        }
        if devices.len() >= self.config.max_devices {
            return Err(SentriError::validation("Too many two-factor devices"));
        }
        let mut secret = [0u8; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| SentriError::internal(std::io::Error::other("no randomness")))?;
        let id = uuid::Uuid::now_v7().to_string();
        let device = Device {
            sealed_secret: self.config.sealer.seal(&secret, &device_aad(&id))?,
            id,
            name,
            confirmed_at: None,
            last_used_step: 0,
            created_at: now,
        };
        self.store.insert_device(&user.id, &device).await?;
        self.emit(AuthEventKind::TwoFactorEnrolled, &user.id, None);
        let b32 = totp::base32_encode(&secret);
        let account = (self.config.account_name)(user);
        let issuer = &self.config.issuer;
        let otpauth_url = format!(
            "otpauth://totp/{}:{}?secret={b32}&issuer={}&algorithm=SHA1&digits={}&period={}",
            pct(issuer),
            pct(&account),
            pct(issuer),
            totp::DIGITS,
            totp::STEP_SECS
        );
        Ok(Enrolment {
            device_id: device.id,
            name: device.name,
            secret: b32,
            otpauth_url,
        })
    }

    /// Confirms an enrolment with a current code; the first device also gets a fresh set
    /// of backup codes (returned, shown once).
    pub async fn confirm(
        &self,
        user_id: &str,
        device_id: &str,
        code: &str,
    ) -> Result<Option<Vec<String>>> {
        let now = self.now();
        let devices = self.store.devices(user_id).await?;
        let already_on = devices.iter().any(|d| d.confirmed_at.is_some());
        let fresh = now.saturating_sub(duration_ms(self.config.enroll_ttl));
        let device = devices
            .into_iter()
            .find(|d| d.id == device_id && d.confirmed_at.is_none() && d.created_at > fresh)
            .ok_or_else(|| SentriError::new(ErrorCode::NotFound, "No such pending device"))?;
        let step = totp_shape(code)
            .and_then(|c| self.matching_step(&device, &c, now))
            .ok_or_else(invalid_code)?;
        if !self
            .store
            .confirm_device(user_id, device_id, step, now)
            .await?
        {
            return Err(invalid_code());
        }
        self.emit(AuthEventKind::TwoFactorConfirmed, user_id, None);
        if already_on {
            return Ok(None);
        }
        Ok(Some(self.new_backup_codes(user_id).await?))
    }

    /// Replaces the backup codes after checking the password and a second factor.
    pub async fn regenerate_backup_codes(
        &self,
        user_id: &str,
        password: &str,
        code: &str,
    ) -> Result<Vec<String>> {
        self.core
            .identity
            .check_current_password(user_id, password)
            .await?;
        self.check_second_factor(user_id, code, None, None).await?;
        let codes = self.new_backup_codes(user_id).await?;
        self.emit(AuthEventKind::BackupCodesRegenerated, user_id, None);
        Ok(codes)
    }

    async fn new_backup_codes(&self, user_id: &str) -> Result<Vec<String>> {
        let codes = (0..self.config.backup_codes)
            .map(|_| new_backup_code())
            .collect::<Result<Vec<_>>>()?;
        let hashes: Vec<String> = codes
            .iter()
            .filter_map(|c| backup_hash(user_id, c))
            .collect();
        self.store
            .replace_backup_codes(user_id, &hashes, self.now())
            .await?;
        Ok(codes)
    }

    /// Removes a device after checking both factors: the password and a current code
    /// (or a backup code). Removing the last confirmed device turns 2FA off and deletes
    /// the backup codes.
    pub async fn remove_device(
        &self,
        user_id: &str,
        device_id: &str,
        password: &str,
        code: &str,
    ) -> Result<()> {
        self.core
            .identity
            .check_current_password(user_id, password)
            .await?;
        if !self
            .store
            .devices(user_id)
            .await?
            .iter()
            .any(|d| d.id == device_id)
        {
            return Err(SentriError::new(ErrorCode::NotFound, "No such device"));
        }
        self.check_second_factor(user_id, code, None, None).await?;
        if !self.store.delete_device(user_id, device_id).await? {
            return Err(SentriError::new(ErrorCode::NotFound, "No such device"));
        }
        self.emit(AuthEventKind::TwoFactorDisabled, user_id, None);
        Ok(())
    }

    /// The user's devices (no secrets) and how many backup codes are left.
    pub async fn status(&self, user_id: &str) -> Result<serde_json::Value> {
        let devices = self.store.devices(user_id).await?;
        let enabled = devices.iter().any(|d| d.confirmed_at.is_some());
        let list: Vec<serde_json::Value> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id,
                    "name": d.name,
                    "confirmed": d.confirmed_at.is_some(),
                    "createdAt": d.created_at,
                })
            })
            .collect();
        let left = self.store.backup_codes_left(user_id).await?;
        Ok(serde_json::json!({
            "enabled": enabled,
            "devices": list,
            "backupCodesRemaining": left,
        }))
    }

    /// The login step: a user with 2FA gets a challenge instead of a session.
    pub(super) async fn challenge(
        &self,
        user: &AuthUser,
        factor: FirstFactor,
    ) -> Result<Option<Challenge>> {
        if !self.is_enabled(&user.id).await? {
            return Ok(None);
        }
        let now = self.now();
        let token = random_token(32);
        let row = ChallengeRow {
            user_id: user.id.clone(),
            amr: factor.amr().to_owned(),
            expires_at: now.saturating_add(duration_ms(self.config.challenge_ttl)),
        };
        self.store
            .insert_challenge(&sha256_hex(&token), &row, now)
            .await?;
        Ok(Some(Challenge {
            message: "Second factor required",
            data: serde_json::json!({
                "twoFactorRequired": true,
                "twoFactorToken": token,
                "expiresIn": self.config.challenge_ttl.as_secs(),
            }),
        }))
    }

    /// Completes a challenged login with a TOTP or backup code: the login steps
    /// registered after two-factor run (any may halt or challenge), then a session
    /// whose assurance is level 2.
    pub async fn verify_login(&self, token: &str, code: &str, meta: SessionMeta) -> Result<SignIn> {
        let span = crate::core::observe::op_span!("verify_2fa");
        crate::core::observe::traced(span, self.verify_login_once(token, code, meta), |_| "ok")
            .await
    }

    async fn verify_login_once(
        &self,
        token: &str,
        code: &str,
        meta: SessionMeta,
    ) -> Result<SignIn> {
        let throttle = self.core.throttle();
        let attempt = throttle.attempt_from(meta.ip.as_deref()).await?;
        let result = self.verify_challenge(token, code, meta).await;
        attempt.settle(&result).await;
        result
    }

    /// [`verify_login`](Self::verify_login) once the client address was admitted.
    async fn verify_challenge(&self, token: &str, code: &str, meta: SessionMeta) -> Result<SignIn> {
        let hash = sha256_hex(token);
        let now = self.now();
        let row = self
            .store
            .find_challenge(&hash)
            .await?
            .filter(|r| r.expires_at > now)
            .ok_or_else(invalid_token)?;
        let method = self
            .check_second_factor(&row.user_id, code, Some((&hash, now)), Some(&meta))
            .await?;
        let user = self.core.identity.get_user(&row.user_id).await?;
        let first = Assurance::single(&row.amr);
        let assurance = Assurance::two_factor(&first, "otp");
        self.emit(AuthEventKind::TwoFactorVerified, &user.id, Some(&meta));
        if method == Method::Backup {
            self.emit(AuthEventKind::BackupCodeUsed, &user.id, Some(&meta));
        }
        // The steps registered after this one still run (e.g. a required verified
        // address): meeting the second factor skips none of them.
        let factor = FirstFactor::from_amr(&row.amr);
        self.core
            .resume_sign_in(STEP_NAME, user, meta, factor, &assurance)
            .await
    }

    /// A re-authentication's second factor: a TOTP code or an unused backup code of
    /// `user_id`, under the same per-user limit as a login's.
    pub(super) async fn check_code(&self, user_id: &str, code: &str) -> Result<()> {
        let method = self.check_second_factor(user_id, code, None, None).await?;
        if method == Method::Backup {
            self.emit(AuthEventKind::BackupCodeUsed, user_id, None);
        }
        Ok(())
    }

    /// The one check of a second factor: the per-user limit, the challenge's own limit
    /// (when given), then a TOTP code of any confirmed device (each step once) or an
    /// unused backup code; the challenge is consumed in the same transaction.
    async fn check_second_factor(
        &self,
        user_id: &str,
        code: &str,
        challenge: Option<(&str, i64)>,
        meta: Option<&SessionMeta>,
    ) -> Result<Method> {
        let now = self.now();
        self.reserve_attempts(user_id, challenge, now).await?;
        let accepted = match totp_shape(code) {
            Some(digits) => self.accept_totp(user_id, &digits, challenge, now).await?,
            None => self.accept_backup(user_id, code, challenge).await?,
        };
        match accepted {
            Some(method) => {
                self.store.clear_user_attempts(user_id).await?;
                Ok(method)
            }
            None => {
                self.emit(AuthEventKind::TwoFactorFailed, user_id, meta);
                Err(invalid_code())
            }
        }
    }

    async fn reserve_attempts(
        &self,
        user_id: &str,
        challenge: Option<(&str, i64)>,
        now: i64,
    ) -> Result<()> {
        let max = i64::from(self.config.max_failures);
        let window = duration_ms(self.config.failure_window);
        if let Err(until) = self
            .store
            .reserve_user_attempt(user_id, max, window, now)
            .await?
        {
            let wait = u64::try_from(until.saturating_sub(now) / 1000).unwrap_or(0) + 1;
            return Err(SentriError::new(
                ErrorCode::TwoFactorLocked,
                "Too many wrong codes: try again later",
            )
            .with_retry_after(wait));
        }
        if let Some((hash, now)) = challenge {
            let max = i64::from(self.config.challenge_attempts);
            if !self.store.reserve_challenge_attempt(hash, max, now).await? {
                return Err(invalid_token());
            }
        }
        Ok(())
    }

    async fn accept_totp(
        &self,
        user_id: &str,
        code: &str,
        challenge: Option<(&str, i64)>,
        now: i64,
    ) -> Result<Option<Method>> {
        let devices = self.store.devices(user_id).await?;
        for device in devices.iter().filter(|d| d.confirmed_at.is_some()) {
            let Some(step) = self.matching_step(device, code, now) else {
                continue;
            };
            // Exactly one concurrent submission of a step wins this update.
            if self.store.accept_step(&device.id, step, challenge).await? {
                return Ok(Some(Method::Totp));
            }
        }
        Ok(None)
    }

    async fn accept_backup(
        &self,
        user_id: &str,
        code: &str,
        challenge: Option<(&str, i64)>,
    ) -> Result<Option<Method>> {
        let Some(hash) = backup_hash(user_id, code) else {
            return Ok(None);
        };
        let used = self.store.accept_backup(user_id, &hash, challenge).await?;
        Ok(used.then_some(Method::Backup))
    }

    /// The newest step in the skew window whose code is `code` and that the device has
    /// not used yet.
    fn matching_step(&self, device: &Device, code: &str, now: i64) -> Option<i64> {
        let secret = match self
            .config
            .sealer
            .open(&device.sealed_secret, &device_aad(&device.id))
        {
            Ok(secret) => secret,
            Err(err) => {
                tracing::error!(device = %device.id, error = %err, "sentri: a TOTP secret does not open");
                return None;
            }
        };
        totp::matching_step(
            &secret,
            code,
            totp::step_at(now),
            i64::from(self.config.skew),
            device.last_used_step,
        )
    }
}
