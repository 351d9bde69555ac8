//! The tables of the `two_factor` component and every statement on them (sea-query,
//! three dialects). Each single-use rule is one conditional statement whose affected-row
//! count decides the winner.

use sea_query::{
    ColumnDef, Expr, ExprTrait, ForeignKey, ForeignKeyAction, ForeignKeyCreateStatement, Query,
    Table,
};

use crate::core::error::{Result, SentriError};
use crate::db::{Database, Migration, Step, StepsOutcome, Target, db_err, on_pool};
use crate::identity::schema::USERS;

pub(super) const DEVICES: &str = "sentri_two_factor_devices";
pub(super) const BACKUP: &str = "sentri_two_factor_backup_codes";
pub(super) const CHALLENGES: &str = "sentri_two_factor_challenges";
pub(super) const LIMITS: &str = "sentri_two_factor_limits";

const ID: &str = "id";
const USER_ID: &str = "user_id";
const NAME: &str = "name";
const SECRET: &str = "secret";
const CONFIRMED_AT: &str = "confirmed_at";
const LAST_USED_STEP: &str = "last_used_step";
const CREATED_AT: &str = "created_at";
const CODE_HASH: &str = "code_hash";
const TOKEN_HASH: &str = "token_hash";
const AMR: &str = "amr";
const EXPIRES_AT: &str = "expires_at";
const ATTEMPTS: &str = "attempts";
const FAILURES: &str = "failures";
const WINDOW_ENDS: &str = "window_ends";

/// The migrations of the `two_factor` component.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    component: "two_factor",
    version: 1,
    up: tables,
}];

fn user_fk(table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_user"))
        .from(table, USER_ID)
        .to(USERS, "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn tables(target: Target) -> Vec<String> {
    let mut devices = Table::create();
    devices
        .table(DEVICES)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(NAME).string_len(64).not_null())
        .col(ColumnDef::new(SECRET).string_len(255).not_null())
        .col(ColumnDef::new(CONFIRMED_AT).big_integer().null())
        .col(ColumnDef::new(LAST_USED_STEP).big_integer().not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .foreign_key(&mut user_fk(DEVICES));
    let mut backup = Table::create();
    backup
        .table(BACKUP)
        .col(
            ColumnDef::new(CODE_HASH)
                .string_len(64)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .foreign_key(&mut user_fk(BACKUP));
    let mut challenges = Table::create();
    challenges
        .table(CHALLENGES)
        .col(
            ColumnDef::new(TOKEN_HASH)
                .string_len(64)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(AMR).string_len(16).not_null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null())
        .col(ColumnDef::new(ATTEMPTS).big_integer().not_null())
        .foreign_key(&mut user_fk(CHALLENGES));
    let mut limits = Table::create();
    limits
        .table(LIMITS)
        .col(
            ColumnDef::new(USER_ID)
                .string_len(36)
                .not_null()
                .primary_key(),
        )
        .col(ColumnDef::new(FAILURES).big_integer().not_null())
        .col(ColumnDef::new(WINDOW_ENDS).big_integer().not_null())
        .foreign_key(&mut user_fk(LIMITS));
    let mut out = target.create_table(devices.to_owned(), vec![Target::index(DEVICES, USER_ID)]);
    out.extend(target.create_table(backup.to_owned(), vec![Target::index(BACKUP, USER_ID)]));
    out.extend(target.create_table(
        challenges.to_owned(),
        vec![Target::index(CHALLENGES, USER_ID)],
    ));
    out.extend(target.create_table(limits.to_owned(), Vec::new()));
    out
}

/// One TOTP device (its secret still sealed).
#[derive(Clone)]
pub(super) struct Device {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) sealed_secret: String,
    pub(super) confirmed_at: Option<i64>,
    pub(super) last_used_step: i64,
    pub(super) created_at: i64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("confirmed_at", &self.confirmed_at)
            .finish_non_exhaustive()
    }
}

/// A pending 2FA login.
#[derive(Debug, Clone)]
pub(super) struct ChallengeRow {
    pub(super) user_id: String,
    pub(super) amr: String,
    pub(super) expires_at: i64,
}

type DeviceTuple = (String, String, String, Option<i64>, i64, i64);

/// The `two_factor` store: a thin wrapper over the database.
#[derive(Clone, Debug)]
pub(super) struct Store {
    pub(super) db: Database,
}

fn step(db: &Database, stmt: &impl sea_query_sqlx::SqlxBinder, must_affect: bool) -> Step {
    Step {
        built: db.build(stmt),
        must_affect,
    }
}

impl Store {
    // ---- devices -------------------------------------------------------------------

    pub(super) async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        let (sql, values) = self.db.build(
            &Query::select()
                .columns([ID, NAME, SECRET, CONFIRMED_AT, LAST_USED_STEP, CREATED_AT])
                .from(DEVICES)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .order_by(CREATED_AT, sea_query::Order::Asc)
                .to_owned(),
        );
        let rows: Vec<DeviceTuple> = self
            .db
            .read(|| async {
                on_pool!(self.db, pool => sqlx::query_as_with::<_, DeviceTuple, _>(
                    sqlx::AssertSqlSafe(sql.clone()),
                    values.clone(),
                )
                .fetch_all(pool)
                .await
                .map_err(db_err))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, sealed_secret, confirmed_at, last_used_step, created_at)| Device {
                    id,
                    name,
                    sealed_secret,
                    confirmed_at,
                    last_used_step,
                    created_at,
                },
            )
            .collect())
    }

    pub(super) async fn insert_device(&self, user_id: &str, device: &Device) -> Result<()> {
        let insert = Query::insert()
            .into_table(DEVICES)
            .columns([
                ID,
                USER_ID,
                NAME,
                SECRET,
                CONFIRMED_AT,
                LAST_USED_STEP,
                CREATED_AT,
            ])
            .values([
                Expr::val(device.id.as_str()),
                Expr::val(user_id),
                Expr::val(device.name.as_str()),
                Expr::val(device.sealed_secret.as_str()),
                Expr::val(None::<i64>),
                Expr::val(0i64),
                Expr::val(device.created_at),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        self.db.exec(self.db.build(&insert)).await.map(|_| ())
    }

    /// Deletes the user's unconfirmed devices created before `before`.
    pub(super) async fn delete_stale_devices(&self, user_id: &str, before: i64) -> Result<()> {
        let stmt = Query::delete()
            .from_table(DEVICES)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(CONFIRMED_AT).is_null())
            .and_where(Expr::col(CREATED_AT).lt(before))
            .to_owned();
        self.db.exec(self.db.build(&stmt)).await.map(|_| ())
    }

    /// Confirms a device at `step` (once: `false` if it was already confirmed or gone).
    pub(super) async fn confirm_device(
        &self,
        user_id: &str,
        id: &str,
        step: i64,
        now: i64,
    ) -> Result<bool> {
        let stmt = Query::update()
            .table(DEVICES)
            .value(CONFIRMED_AT, now)
            .value(LAST_USED_STEP, step)
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(CONFIRMED_AT).is_null())
            .and_where(Expr::col(LAST_USED_STEP).lt(step))
            .to_owned();
        self.db.exec_retrying(self.db.build(&stmt)).await
    }

    /// The conditional update that accepts a time step once per device.
    fn use_step(&self, device_id: &str, step: i64) -> Step {
        let stmt = Query::update()
            .table(DEVICES)
            .value(LAST_USED_STEP, step)
            .and_where(Expr::col(ID).eq(device_id))
            .and_where(Expr::col(CONFIRMED_AT).is_not_null())
            .and_where(Expr::col(LAST_USED_STEP).lt(step))
            .to_owned();
        sql_step(&self.db, &stmt)
    }

    /// The conditional delete that uses a backup code once.
    fn use_backup(&self, user_id: &str, code_hash: &str) -> Step {
        let stmt = Query::delete()
            .from_table(BACKUP)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(CODE_HASH).eq(code_hash))
            .to_owned();
        sql_step(&self.db, &stmt)
    }

    /// The conditional delete that ends a challenge once.
    fn use_challenge(&self, token_hash: &str, now: i64) -> Step {
        let stmt = Query::delete()
            .from_table(CHALLENGES)
            .and_where(Expr::col(TOKEN_HASH).eq(token_hash))
            .and_where(Expr::col(EXPIRES_AT).gt(now))
            .to_owned();
        sql_step(&self.db, &stmt)
    }

    /// Accepts `step` of a device (and ends the challenge, when given) in one
    /// transaction: `false` when the step was used already (or the challenge was).
    pub(super) async fn accept_step(
        &self,
        device_id: &str,
        step: i64,
        challenge: Option<(&str, i64)>,
    ) -> Result<bool> {
        let mut steps = vec![self.use_step(device_id, step)];
        steps.extend(challenge.map(|(hash, now)| self.use_challenge(hash, now)));
        Ok(self.db.steps(&steps, db_err).await? == StepsOutcome::Committed)
    }

    /// Uses a backup code (and ends the challenge, when given) in one transaction.
    pub(super) async fn accept_backup(
        &self,
        user_id: &str,
        code_hash: &str,
        challenge: Option<(&str, i64)>,
    ) -> Result<bool> {
        let mut steps = vec![self.use_backup(user_id, code_hash)];
        steps.extend(challenge.map(|(hash, now)| self.use_challenge(hash, now)));
        Ok(self.db.steps(&steps, db_err).await? == StepsOutcome::Committed)
    }

    /// Deletes a confirmed device; with it the last one, the backup codes too.
    pub(super) async fn delete_device(&self, user_id: &str, id: &str) -> Result<bool> {
        let stmt = Query::delete()
            .from_table(DEVICES)
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(USER_ID).eq(user_id))
            .to_owned();
        let deleted = self.db.exec_retrying(self.db.build(&stmt)).await?;
        if deleted
            && !self
                .devices(user_id)
                .await?
                .iter()
                .any(|d| d.confirmed_at.is_some())
        {
            let codes = Query::delete()
                .from_table(BACKUP)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .to_owned();
            self.db.exec(self.db.build(&codes)).await?;
        }
        Ok(deleted)
    }

    // ---- backup codes --------------------------------------------------------------

    /// Replaces the user's backup codes with `hashes`, in one transaction.
    pub(super) async fn replace_backup_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        now: i64,
    ) -> Result<()> {
        let delete = Query::delete()
            .from_table(BACKUP)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .to_owned();
        let mut insert = Query::insert();
        insert
            .into_table(BACKUP)
            .columns([CODE_HASH, USER_ID, CREATED_AT]);
        for hash in hashes {
            insert
                .values([Expr::val(hash.as_str()), Expr::val(user_id), Expr::val(now)])
                .map_err(SentriError::internal)?;
        }
        let steps = [
            step(&self.db, &delete, false),
            step(&self.db, &insert, false),
        ];
        self.db.steps(&steps, db_err).await.map(|_| ())
    }

    pub(super) async fn backup_codes_left(&self, user_id: &str) -> Result<i64> {
        let (sql, values) = self.db.build(
            &Query::select()
                .expr(Expr::col(CODE_HASH).count())
                .from(BACKUP)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .to_owned(),
        );
        self.db
            .read(|| async {
                on_pool!(self.db, pool => sqlx::query_as_with::<_, (i64,), _>(
                    sqlx::AssertSqlSafe(sql.clone()),
                    values.clone(),
                )
                .fetch_one(pool)
                .await
                .map(|(n,)| n)
                .map_err(db_err))
            })
            .await
    }

    // ---- challenges ----------------------------------------------------------------

    pub(super) async fn insert_challenge(
        &self,
        token_hash: &str,
        row: &ChallengeRow,
        now: i64,
    ) -> Result<()> {
        let purge = Query::delete()
            .from_table(CHALLENGES)
            .and_where(Expr::col(USER_ID).eq(row.user_id.as_str()))
            .and_where(Expr::col(EXPIRES_AT).lte(now))
            .to_owned();
        self.db.exec(self.db.build(&purge)).await?;
        let insert = Query::insert()
            .into_table(CHALLENGES)
            .columns([TOKEN_HASH, USER_ID, AMR, EXPIRES_AT, ATTEMPTS])
            .values([
                Expr::val(token_hash),
                Expr::val(row.user_id.as_str()),
                Expr::val(row.amr.as_str()),
                Expr::val(row.expires_at),
                Expr::val(0i64),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        self.db.exec(self.db.build(&insert)).await.map(|_| ())
    }

    /// Deletes every outstanding challenge of the user (one statement).
    /// Deletes every device, backup code and challenge of the user, in one transaction.
    pub(super) async fn delete_all(&self, user_id: &str) -> Result<()> {
        let steps: Vec<_> = [DEVICES, BACKUP, CHALLENGES]
            .into_iter()
            .map(|table| {
                let stmt = Query::delete()
                    .from_table(table)
                    .and_where(Expr::col(USER_ID).eq(user_id))
                    .to_owned();
                step(&self.db, &stmt, false)
            })
            .collect();
        self.db.steps(&steps, db_err).await.map(|_| ())
    }

    pub(super) async fn delete_challenges(&self, user_id: &str) -> Result<()> {
        let stmt = Query::delete()
            .from_table(CHALLENGES)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .to_owned();
        self.db.exec(self.db.build(&stmt)).await.map(|_| ())
    }

    pub(super) async fn find_challenge(&self, token_hash: &str) -> Result<Option<ChallengeRow>> {
        let (sql, values) = self.db.build(
            &Query::select()
                .columns([USER_ID, AMR, EXPIRES_AT])
                .from(CHALLENGES)
                .and_where(Expr::col(TOKEN_HASH).eq(token_hash))
                .to_owned(),
        );
        let row: Option<(String, String, i64)> = self
            .db
            .read(|| async {
                on_pool!(self.db, pool => sqlx::query_as_with::<_, (String, String, i64), _>(
                    sqlx::AssertSqlSafe(sql.clone()),
                    values.clone(),
                )
                .fetch_optional(pool)
                .await
                .map_err(db_err))
            })
            .await?;
        Ok(row.map(|(user_id, amr, expires_at)| ChallengeRow {
            user_id,
            amr,
            expires_at,
        }))
    }

    /// Counts one attempt on a live challenge: `false` once it has had `max` attempts
    /// (or expired, or was used).
    pub(super) async fn reserve_challenge_attempt(
        &self,
        token_hash: &str,
        max: i64,
        now: i64,
    ) -> Result<bool> {
        let stmt = Query::update()
            .table(CHALLENGES)
            .value(ATTEMPTS, Expr::col(ATTEMPTS).add(1))
            .and_where(Expr::col(TOKEN_HASH).eq(token_hash))
            .and_where(Expr::col(ATTEMPTS).lt(max))
            .and_where(Expr::col(EXPIRES_AT).gt(now))
            .to_owned();
        self.db.exec_retrying(self.db.build(&stmt)).await
    }

    // ---- per-user limit ------------------------------------------------------------

    /// Counts one attempt of the user within the window: `Err(window end)` when the
    /// user already made `max` attempts that did not succeed in this window.
    pub(super) async fn reserve_user_attempt(
        &self,
        user_id: &str,
        max: i64,
        window_ms: i64,
        now: i64,
    ) -> Result<std::result::Result<(), i64>> {
        self.ensure_limit_row(user_id).await?;
        let reset = Query::update()
            .table(LIMITS)
            .value(FAILURES, 0i64)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(WINDOW_ENDS).lte(now))
            .to_owned();
        let reserve = Query::update()
            .table(LIMITS)
            .value(FAILURES, Expr::col(FAILURES).add(1))
            .value(WINDOW_ENDS, now.saturating_add(window_ms))
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(FAILURES).lt(max))
            .to_owned();
        let steps = [
            step(&self.db, &reset, false),
            step(&self.db, &reserve, true),
        ];
        if self.db.steps(&steps, db_err).await? == StepsOutcome::Committed {
            return Ok(Ok(()));
        }
        Ok(Err(self.window_end(user_id).await?.unwrap_or(now)))
    }

    /// A success: the user's count starts again.
    pub(super) async fn clear_user_attempts(&self, user_id: &str) -> Result<()> {
        let stmt = Query::update()
            .table(LIMITS)
            .value(FAILURES, 0i64)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .to_owned();
        self.db.exec(self.db.build(&stmt)).await.map(|_| ())
    }

    async fn window_end(&self, user_id: &str) -> Result<Option<i64>> {
        let (sql, values) = self.db.build(
            &Query::select()
                .column(WINDOW_ENDS)
                .from(LIMITS)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .to_owned(),
        );
        self.db
            .read(|| async {
                on_pool!(self.db, pool => sqlx::query_as_with::<_, (i64,), _>(
                    sqlx::AssertSqlSafe(sql.clone()),
                    values.clone(),
                )
                .fetch_optional(pool)
                .await
                .map(|r| r.map(|(n,)| n))
                .map_err(db_err))
            })
            .await
    }

    async fn ensure_limit_row(&self, user_id: &str) -> Result<()> {
        if self.window_end(user_id).await?.is_some() {
            return Ok(());
        }
        let insert = Query::insert()
            .into_table(LIMITS)
            .columns([USER_ID, FAILURES, WINDOW_ENDS])
            .values([Expr::val(user_id), Expr::val(0i64), Expr::val(0i64)])
            .map_err(SentriError::internal)?
            .to_owned();
        match self
            .db
            .exec_with(self.db.build(&insert), |e| {
                if crate::db::is_unique_violation(&e) {
                    SentriError::user_already_exists()
                } else {
                    db_err(e)
                }
            })
            .await
        {
            // A concurrent attempt inserted it first: fine.
            Err(e) if e.is(&crate::ErrorCode::UserAlreadyExists) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn sql_step(db: &Database, stmt: &impl sea_query_sqlx::SqlxBinder) -> Step {
    step(db, stmt, true)
}
