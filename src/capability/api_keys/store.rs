//! The API keys table (`sentri_api_keys`): its migration and statements, built with
//! sea-query for the three dialects.

use sea_query::{
    ColumnDef, Expr, ExprTrait, ForeignKey, ForeignKeyAction, Func, Order, Query, SelectStatement,
    Table,
};
use sea_query_sqlx::SqlxValues;

use crate::core::error::{Result, SentriError};
use crate::core::principal::AuthUser;
use crate::db::{Columns, Database, Migration, Step, Target, db_err, on_pool};
use crate::identity::schema::USERS;

pub(super) const KEYS: &str = "sentri_api_keys";
const ID: &str = "id";
const USER_ID: &str = "user_id";
const NAME: &str = "name";
const KEY_HASH: &str = "key_hash";
const PREFIX: &str = "prefix";
const LAST_FOUR: &str = "last_four";
const SCOPES: &str = "scopes";
const ROLES: &str = "roles";
const METADATA: &str = "metadata";
const CREATED_AT: &str = "created_at";
const EXPIRES_AT: &str = "expires_at";
const LAST_USED_AT: &str = "last_used_at";
const REVOKED_AT: &str = "revoked_at";

const COLUMNS: [&str; 13] = [
    ID,
    USER_ID,
    NAME,
    KEY_HASH,
    PREFIX,
    LAST_FOUR,
    SCOPES,
    ROLES,
    METADATA,
    CREATED_AT,
    EXPIRES_AT,
    LAST_USED_AT,
    REVOKED_AT,
];

/// The migrations of the `api_keys` component.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    component: "api_keys",
    version: 1,
    up: keys_table,
}];

/// Version 1: one row per key; deleting the owner deletes its keys.
fn keys_table(target: Target) -> Vec<String> {
    let mut keys = Table::create();
    keys.table(KEYS)
        .col(ColumnDef::new(ID).string_len(36).not_null().primary_key())
        .col(ColumnDef::new(USER_ID).string_len(36).not_null())
        .col(ColumnDef::new(NAME).string_len(400).not_null())
        .col(
            ColumnDef::new(KEY_HASH)
                .string_len(64)
                .not_null()
                .unique_key(),
        )
        .col(ColumnDef::new(PREFIX).string_len(40).not_null())
        .col(ColumnDef::new(LAST_FOUR).string_len(4).not_null())
        .col(ColumnDef::new(SCOPES).text().not_null())
        .col(ColumnDef::new(ROLES).text().not_null())
        .col(ColumnDef::new(METADATA).text().null())
        .col(ColumnDef::new(CREATED_AT).big_integer().not_null())
        .col(ColumnDef::new(EXPIRES_AT).big_integer().null())
        .col(ColumnDef::new(LAST_USED_AT).big_integer().null())
        .col(ColumnDef::new(REVOKED_AT).big_integer().null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_sentri_api_keys_user")
                .from(KEYS, USER_ID)
                .to(USERS, "id")
                .on_delete(ForeignKeyAction::Cascade),
        );
    target.create_table(keys.to_owned(), vec![Target::index(KEYS, USER_ID)])
}

/// A stored key: everything but the secret (only its hash, never shown).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct KeyRecord {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) name: String,
    pub(super) key_hash: String,
    pub(super) prefix: String,
    pub(super) last_four: String,
    pub(super) scopes: Vec<String>,
    pub(super) roles: Vec<String>,
    pub(super) metadata: Option<serde_json::Value>,
    pub(super) created_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) last_used_at: Option<i64>,
    pub(super) revoked_at: Option<i64>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("prefix", &self.prefix)
            .field("scopes", &self.scopes)
            .field("key_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn json_list(list: &[String]) -> Result<String> {
    serde_json::to_string(list).map_err(SentriError::internal)
}

fn parse_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(SentriError::internal)
}

/// Maps one key row, plus the owner's identifier and roles when joined (any dialect).
fn key_from_row(row: &impl Columns) -> Result<KeyRecord> {
    let scopes: String = row.col(SCOPES)?;
    let roles: String = row.col(ROLES)?;
    let metadata: Option<String> = row.col(METADATA)?;
    Ok(KeyRecord {
        id: row.col(ID)?,
        user_id: row.col(USER_ID)?,
        name: row.col(NAME)?,
        key_hash: row.col(KEY_HASH)?,
        prefix: row.col(PREFIX)?,
        last_four: row.col(LAST_FOUR)?,
        scopes: parse_list(&scopes)?,
        roles: parse_list(&roles)?,
        metadata: metadata
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(SentriError::internal)?,
        created_at: row.col(CREATED_AT)?,
        expires_at: row.col(EXPIRES_AT)?,
        last_used_at: row.col(LAST_USED_AT)?,
        revoked_at: row.col(REVOKED_AT)?,
    })
}

/// Maps a key row joined with its owner.
fn key_and_owner(row: &impl Columns) -> Result<(KeyRecord, AuthUser, i64)> {
    let key = key_from_row(row)?;
    let roles: String = row.col("u_roles")?;
    let owner = AuthUser {
        id: key.user_id.clone(),
        identifier: row.col("u_identifier")?,
        roles: parse_list(&roles)?,
    };
    let version: i64 = row.col("u_authz_version")?;
    Ok((key, owner, version))
}

/// The changes of `PATCH /api-keys/{id}` (`None`: unchanged).
#[derive(Debug, Default)]
pub(super) struct KeyChange<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) scopes: Option<&'a [String]>,
    pub(super) roles: Option<&'a [String]>,
}

/// The key statements over one database.
#[derive(Clone)]
pub(super) struct Store {
    pub(super) db: Database,
}

impl Store {
    fn select() -> SelectStatement {
        Query::select()
            .columns(COLUMNS.map(|c| (KEYS, c)))
            .from(KEYS)
            .to_owned()
    }

    async fn fetch(&self, stmt: &SelectStatement) -> Result<Vec<KeyRecord>> {
        let (sql, values) = self.db.build(stmt);
        let db = &self.db;
        db.read(|| async {
            on_pool!(db, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(key_from_row).collect()
            })
        })
        .await
    }

    /// Inserts a new key (the owner must exist: `USER_NOT_FOUND` otherwise).
    pub(super) async fn insert(&self, k: &KeyRecord) -> Result<()> {
        let metadata = match &k.metadata {
            Some(m) => Some(serde_json::to_string(m).map_err(SentriError::internal)?),
            None => None,
        };
        let stmt = Query::insert()
            .into_table(KEYS)
            .columns(COLUMNS)
            .values([
                Expr::val(k.id.as_str()),
                Expr::val(k.user_id.as_str()),
                Expr::val(k.name.as_str()),
                Expr::val(k.key_hash.as_str()),
                Expr::val(k.prefix.as_str()),
                Expr::val(k.last_four.as_str()),
                Expr::val(json_list(&k.scopes)?),
                Expr::val(json_list(&k.roles)?),
                Expr::val(metadata),
                Expr::val(k.created_at),
                Expr::val(k.expires_at),
                Expr::val(k.last_used_at),
                Expr::val(k.revoked_at),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        self.db
            .exec_with(self.db.build(&stmt), |err| match &err {
                sqlx::Error::Database(e) if e.is_foreign_key_violation() => {
                    SentriError::user_not_found()
                }
                _ => db_err(err),
            })
            .await?;
        Ok(())
    }

    /// The key whose secret hashes to `hash`, with its owner and the owner's
    /// authorization version (read with the roles, in one query). `None` when there is
    /// none or its owner is gone.
    pub(super) async fn find_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<(KeyRecord, AuthUser, i64)>> {
        let stmt = Self::select()
            .expr_as(Expr::col((USERS, "identifier")), "u_identifier")
            .expr_as(
                Expr::col((USERS, crate::identity::roles::schema::AUTHZ_VERSION)),
                "u_authz_version",
            )
            .expr_as(
                Expr::cust(crate::identity::roles::schema::roles_json_sql(
                    self.db.dialect(),
                )),
                "u_roles",
            )
            .inner_join(USERS, Expr::col((USERS, "id")).equals((KEYS, USER_ID)))
            .and_where(Expr::col((KEYS, KEY_HASH)).eq(hash))
            .limit(1)
            .to_owned();
        let (sql, values) = self.db.build(&stmt);
        let db = &self.db;
        db.read(|| async {
            on_pool!(db, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(key_and_owner).transpose()
            })
        })
        .await
    }

    /// The key `id` of `user_id`, if any.
    pub(super) async fn find(&self, user_id: &str, id: &str) -> Result<Option<KeyRecord>> {
        let stmt = Self::select()
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(USER_ID).eq(user_id))
            .limit(1)
            .to_owned();
        Ok(self.fetch(&stmt).await?.into_iter().next())
    }

    /// Every key of `user_id` (revoked ones included), oldest first.
    pub(super) async fn list(&self, user_id: &str) -> Result<Vec<KeyRecord>> {
        let stmt = Self::select()
            .and_where(Expr::col(USER_ID).eq(user_id))
            .order_by(CREATED_AT, Order::Asc)
            .order_by(ID, Order::Asc)
            .to_owned();
        self.fetch(&stmt).await
    }

    /// How many unrevoked keys `user_id` has.
    pub(super) async fn count_live(&self, user_id: &str) -> Result<i64> {
        let stmt = Query::select()
            .expr(Func::count(Expr::col(ID)))
            .from(KEYS)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        let (sql, values) = self.db.build(&stmt);
        let db = &self.db;
        db.read(|| async {
            on_pool!(db, pool => {
                let row = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)?;
                sqlx::Row::try_get::<i64, _>(&row, 0).map_err(db_err)
            })
        })
        .await
    }

    /// Renames and/or rescopes an unrevoked key (nothing to do when every change is
    /// `None`).
    pub(super) async fn update(
        &self,
        user_id: &str,
        id: &str,
        change: &KeyChange<'_>,
    ) -> Result<()> {
        let mut values = Vec::new();
        if let Some(name) = change.name {
            values.push((NAME, Expr::val(name)));
        }
        if let Some(scopes) = change.scopes {
            values.push((SCOPES, Expr::val(json_list(scopes)?)));
        }
        if let Some(roles) = change.roles {
            values.push((ROLES, Expr::val(json_list(roles)?)));
        }
        if values.is_empty() {
            return Ok(());
        }
        let stmt = Query::update()
            .table(KEYS)
            .values(values)
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        self.db.exec(self.db.build(&stmt)).await?;
        Ok(())
    }

    /// Revokes the key `id` of `user_id` at `now`; `false` when it was not live.
    pub(super) async fn revoke(&self, user_id: &str, id: &str, now: i64) -> Result<bool> {
        let stmt = Query::update()
            .table(KEYS)
            .value(REVOKED_AT, now)
            .and_where(Expr::col(ID).eq(id))
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        self.db.exec_retrying(self.db.build(&stmt)).await
    }

    /// Revokes every live key of `user_id` at `now`, in one statement (run again as a
    /// whole on a deadlock or a busy database).
    pub(super) async fn revoke_all(&self, user_id: &str, now: i64) -> Result<()> {
        let stmt = Query::update()
            .table(KEYS)
            .value(REVOKED_AT, now)
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        let step = [Step {
            built: self.db.build(&stmt),
            must_affect: false,
        }];
        self.db.steps(&step, db_err).await?;
        Ok(())
    }

    /// The keys of `user_id` revoked at `since` or later (what
    /// [`revoke_all`](Self::revoke_all) at `since` revoked, and any revoked after it).
    pub(super) async fn revoked_since(&self, user_id: &str, since: i64) -> Result<Vec<KeyRecord>> {
        let stmt = Self::select()
            .and_where(Expr::col(USER_ID).eq(user_id))
            .and_where(Expr::col(REVOKED_AT).gte(since))
            .to_owned();
        self.fetch(&stmt).await
    }

    /// Records a use at `now` unless one was recorded less than `every_ms` before.
    pub(super) async fn touch(&self, id: &str, now: i64, every_ms: i64) -> Result<()> {
        let stmt = Query::update()
            .table(KEYS)
            .value(LAST_USED_AT, now)
            .and_where(Expr::col(ID).eq(id))
            .and_where(
                Expr::col(LAST_USED_AT)
                    .is_null()
                    .or(Expr::col(LAST_USED_AT).lte(now - every_ms)),
            )
            .to_owned();
        let built: (String, SqlxValues) = self.db.build(&stmt);
        self.db.exec(built).await?;
        Ok(())
    }
}
