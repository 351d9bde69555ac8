//! The SSO tables (links, in-flight flows) and their statements, on the three dialects.

use sea_query::{
    ColumnDef, Expr, ExprTrait, ForeignKey, ForeignKeyAction, Index, Order, Query, Table,
};

use crate::core::error::SentriError;
use crate::db::{
    Database, Migration, Step, StepsOutcome, Target, db_err, is_unique_violation, on_pool,
};
use crate::identity::schema::{
    EMAIL as EMAIL_COL, EMAIL_VERIFIED_AT, ID as USER_ID_COL, PASSWORD_HASH, UPDATED_AT, USERS,
};
use crate::identity::{NewUser, UserRecord};

pub(super) const LINKS: &str = "sentri_sso_links";
pub(super) const FLOWS: &str = "sentri_sso_flows";

const ID: &str = "id";
const USER_ID: &str = "user_id";
const PROVIDER: &str = "provider";
const SUBJECT: &str = "subject";
const EMAIL: &str = "email";
const CREATED_AT: &str = "created_at";
const BINDING_HASH: &str = "binding_hash";
const NONCE: &str = "nonce";
const RETURN_TO: &str = "return_to";
const LINK_USER_ID: &str = "link_user_id";
const EXPIRES_AT: &str = "expires_at";

/// The migrations of the `sso` component.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    component: "sso",
    version: 1,
    up: tables,
}];

fn tables(target: Target) -> Vec<String> {
    let mut links = Table::create();
    links
        .table(LINKS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(PROVIDER).string_len(32).not_null())
        .col(ColumnDef::new(SUBJECT).string_len(255).not_null())
        .col(ColumnDef::new(EMAIL).string_len(320).null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_sso_links_user")
                .from(LINKS, USER_ID)
                .to(USERS, USER_ID_COL)
                .on_delete(ForeignKeyAction::Cascade),
        );
    let unique = |name: &str, cols: [&'static str; 2]| {
        Index::create()
            .name(name)
            .table(LINKS)
            .col(cols[0])
            .col(cols[1])
            .unique()
            .if_not_exists()
            .to_owned()
    };
    let link_indexes = vec![
        // One account per external identity.
        unique("uq_sentri_sso_links_subject", [PROVIDER, SUBJECT]),
        // One link per provider per account.
        unique("uq_sentri_sso_links_user", [USER_ID, PROVIDER]),
    ];
    let mut out = target.create_table(links.to_owned(), link_indexes);
    let mut flows = Table::create();
    flows
        .table(FLOWS)
        .col(ColumnDef::new(ID).string_len(64).not_null().primary_key())
        .col(ColumnDef::new(PROVIDER).string_len(32).not_null())
        .col(ColumnDef::new(BINDING_HASH).string_len(64).not_null())
        .col(ColumnDef::new(NONCE).string_len(64).not_null())
        .col(ColumnDef::new(RETURN_TO).string_len(2048).not_null())
        .col(ColumnDef::new(LINK_USER_ID).string_len(36).null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().not_null());
    out.extend(target.create_table(flows.to_owned(), vec![Target::index(FLOWS, EXPIRES_AT)]));
    out
}

/// One in-flight flow, as stored (the state and the browser secret only as hashes).
#[derive(Debug, Clone)]
pub(super) struct Flow {
    pub(super) id: String,
    pub(super) provider: String,
    pub(super) binding_hash: String,
    pub(super) nonce: String,
    pub(super) return_to: String,
    pub(super) link_user_id: Option<String>,
    pub(super) expires_at: i64,
}

/// One link of an account to an external identity.
#[derive(Debug, Clone)]
pub(super) struct LinkRow {
    pub(super) provider: String,
    pub(super) email: Option<String>,
    pub(super) created_at: i64,
}

/// What a guarded unlink did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unlink {
    Done,
    NotLinked,
    LastMethod,
}

/// A unique constraint was hit (the caller decides what it means).
pub(super) fn conflict(err: sqlx::Error) -> SentriError {
    if is_unique_violation(&err) {
        SentriError::new(crate::ErrorCode::SsoLinkConflict, "conflict")
    } else {
        db_err(err)
    }
}

macro_rules! row_get {
    ($row:expr, $col:expr) => {
        sqlx::Row::try_get($row, $col).map_err(db_err)?
    };
}

impl Database {
    pub(super) async fn sso_insert_flow(&self, f: &Flow, now: i64) -> Result<(), SentriError> {
        let stmt = Query::insert()
            .into_table(FLOWS)
            .columns([
                ID,
                PROVIDER,
                BINDING_HASH,
                NONCE,
                RETURN_TO,
                LINK_USER_ID,
                CREATED_AT,
                EXPIRES_AT,
            ])
            .values([
                Expr::val(f.id.as_str()),
                Expr::val(f.provider.as_str()),
                Expr::val(f.binding_hash.as_str()),
                Expr::val(f.nonce.as_str()),
                Expr::val(f.return_to.as_str()),
                Expr::val(f.link_user_id.clone()),
                Expr::val(now),
                Expr::val(f.expires_at),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        self.exec(self.build(&stmt)).await?;
        Ok(())
    }

    /// Deletes flows that expired before `now`.
    pub(super) async fn sso_purge_flows(&self, now: i64) -> Result<u64, SentriError> {
        let stmt = Query::delete()
            .from_table(FLOWS)
            .and_where(Expr::col(EXPIRES_AT).lt(now))
            .to_owned();
        self.exec(self.build(&stmt)).await
    }

    pub(super) async fn sso_find_flow(&self, id: &str) -> Result<Option<Flow>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .columns([
                    ID,
                    PROVIDER,
                    BINDING_HASH,
                    NONCE,
                    RETURN_TO,
                    LINK_USER_ID,
                    EXPIRES_AT,
                ])
                .from(FLOWS)
                .and_where(Expr::col(ID).eq(id))
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some(Flow {
                    id: row_get!(&row, ID),
                    provider: row_get!(&row, PROVIDER),
                    binding_hash: row_get!(&row, BINDING_HASH),
                    nonce: row_get!(&row, NONCE),
                    return_to: row_get!(&row, RETURN_TO),
                    link_user_id: row_get!(&row, LINK_USER_ID),
                    expires_at: row_get!(&row, EXPIRES_AT),
                }))
            })
        })
        .await
    }

    /// Deletes every in-flight flow that would link an external identity to `user_id`.
    pub(super) async fn sso_end_link_flows(&self, user_id: &str) -> Result<(), SentriError> {
        let stmt = Query::delete()
            .from_table(FLOWS)
            .and_where(Expr::col(LINK_USER_ID).eq(user_id))
            .to_owned();
        self.exec(self.build(&stmt)).await.map(|_| ())
    }

    /// Deletes the flow; `true` for exactly one caller however many race.
    pub(super) async fn sso_consume_flow(&self, id: &str) -> Result<bool, SentriError> {
        let stmt = Query::delete()
            .from_table(FLOWS)
            .and_where(Expr::col(ID).eq(id))
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? == 1)
    }

    /// The user id linked to `(provider, subject)`, if any.
    pub(super) async fn sso_find_link(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .column(USER_ID)
                .from(LINKS)
                .and_where(Expr::col(PROVIDER).eq(provider))
                .and_where(Expr::col(SUBJECT).eq(subject))
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                match row {
                    Some(row) => Ok(Some(row_get!(&row, USER_ID))),
                    None => Ok(None),
                }
            })
        })
        .await
    }

    /// The links of a user, oldest first.
    pub(super) async fn sso_links_of(&self, user_id: &str) -> Result<Vec<LinkRow>, SentriError> {
        let (sql, values) = self.build(
            &Query::select()
                .columns([PROVIDER, EMAIL, CREATED_AT])
                .from(LINKS)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .order_by(CREATED_AT, Order::Asc)
                .order_by(PROVIDER, Order::Asc)
                .to_owned(),
        );
        self.read(|| async {
            on_pool!(self, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    out.push(LinkRow {
                        provider: row_get!(row, PROVIDER),
                        email: row_get!(row, EMAIL),
                        created_at: row_get!(row, CREATED_AT),
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    fn sso_link_insert(
        &self,
        user_id: &str,
        provider: &str,
        subject: &str,
        email: Option<&str>,
        now: i64,
    ) -> Result<(String, sea_query_sqlx::SqlxValues), SentriError> {
        let stmt = Query::insert()
            .into_table(LINKS)
            .columns([ID, USER_ID, PROVIDER, SUBJECT, EMAIL, CREATED_AT])
            .values([
                Expr::val(uuid::Uuid::now_v7().to_string()),
                Expr::val(user_id),
                Expr::val(provider),
                Expr::val(subject),
                Expr::val(email.map(str::to_owned)),
                Expr::val(now),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        Ok(self.build(&stmt))
    }

    /// Links `(provider, subject)` to an existing user; `SSO_LINK_CONFLICT` when the
    /// identity or the user's slot for this provider is taken.
    pub(super) async fn sso_insert_link(
        &self,
        user_id: &str,
        provider: &str,
        subject: &str,
        email: Option<&str>,
        now: i64,
    ) -> Result<(), SentriError> {
        let built = self.sso_link_insert(user_id, provider, subject, email, now)?;
        self.exec_with(built, conflict).await?;
        Ok(())
    }

    /// Creates a user and its first link in one transaction; `SSO_LINK_CONFLICT` when
    /// the identifier or the identity is taken (nothing is created then).
    pub(super) async fn sso_create_linked_user(
        &self,
        new: &NewUser<'_>,
        provider: &str,
        subject: &str,
        email: Option<&str>,
        now: i64,
    ) -> Result<UserRecord, SentriError> {
        let (record, mut steps) = self.insert_user(new)?;
        // The provider vouched for the address that is the new identifier: verified.
        let verified = Query::update()
            .table(USERS)
            .value(EMAIL_COL, new.identifier)
            .value(EMAIL_VERIFIED_AT, now)
            .and_where(Expr::col(USER_ID_COL).eq(record.id.as_str()))
            .to_owned();
        steps.push(Step {
            built: self.build(&verified),
            must_affect: true,
        });
        steps.push(Step {
            built: self.sso_link_insert(&record.id, provider, subject, email, now)?,
            must_affect: true,
        });
        match self.steps(&steps, conflict).await? {
            StepsOutcome::Committed => Ok(record),
            StepsOutcome::StoppedAt(_) => Err(SentriError::internal(std::io::Error::other(
                "an insert affected no row",
            ))),
        }
    }

    /// Removes the user's link to `provider`, unless it is their last way to sign in
    /// (no password and no other link). The user row is locked first, so two unlinks
    /// racing for the last two links cannot both win.
    pub(super) async fn sso_unlink(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Unlink, SentriError> {
        let lock = self.build(
            &Query::update()
                .table(USERS)
                .value(UPDATED_AT, Expr::col(UPDATED_AT))
                .and_where(Expr::col(USER_ID_COL).eq(user_id))
                .to_owned(),
        );
        let hash = self.build(
            &Query::select()
                .column(PASSWORD_HASH)
                .from(USERS)
                .and_where(Expr::col(USER_ID_COL).eq(user_id))
                .to_owned(),
        );
        let links = self.build(
            &Query::select()
                .column(PROVIDER)
                .from(LINKS)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .to_owned(),
        );
        let delete = self.build(
            &Query::delete()
                .from_table(LINKS)
                .and_where(Expr::col(USER_ID).eq(user_id))
                .and_where(Expr::col(PROVIDER).eq(provider))
                .to_owned(),
        );
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self
                .bounded(async {
                    Ok(on_pool!(self, pool => async {
                        let mut tx = pool.begin().await?;
                        // Row lock (MySQL reports 0 changed rows here: not a signal).
                        sqlx::query_with(sqlx::AssertSqlSafe(lock.0.clone()), lock.1.clone())
                            .execute(&mut *tx)
                            .await?;
                        let row = sqlx::query_with(sqlx::AssertSqlSafe(hash.0.clone()), hash.1.clone())
                            .fetch_optional(&mut *tx)
                            .await?;
                        let Some(row) = row else {
                            tx.rollback().await?;
                            return Ok(Unlink::NotLinked);
                        };
                        let stored: String = sqlx::Row::try_get(&row, PASSWORD_HASH)?;
                        let rows = sqlx::query_with(sqlx::AssertSqlSafe(links.0.clone()), links.1.clone())
                            .fetch_all(&mut *tx)
                            .await?;
                        let mut names = Vec::with_capacity(rows.len());
                        for r in &rows {
                            names.push(sqlx::Row::try_get::<String, _>(r, PROVIDER)?);
                        }
                        let outcome = if !names.iter().any(|n| n == provider) {
                            Unlink::NotLinked
                        } else if names.len() < 2 && !crate::identity::has_password(&stored) {
                            Unlink::LastMethod
                        } else {
                            sqlx::query_with(sqlx::AssertSqlSafe(delete.0.clone()), delete.1.clone())
                                .execute(&mut *tx)
                                .await?;
                            Unlink::Done
                        };
                        tx.commit().await?;
                        Ok(outcome)
                    }.await))
                })
                .await?;
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(err) if crate::db::is_transient(self.dialect(), &err) && attempt < 5 => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(attempt)))
                        .await;
                }
                Err(err) => return Err(db_err(err)),
            }
        }
    }
}
