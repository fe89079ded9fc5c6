//! The suppression list (`email_suppressions`): addresses that hard-bounced, or that an
//! operator added, are not mailed again (their messages are recorded `suppressed`).

use std::collections::HashSet;

use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Suppression {
    pub address: String,
    pub reason: String,
    pub reply: Option<String>,
    pub job_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Addresses compare without case: `Priya@Example.com` bounced is `priya@example.com` too.
pub fn normalize(address: &str) -> String {
    address.trim().to_lowercase()
}

/// Which of these addresses (normalized) are suppressed.
pub async fn among(pg: &PgPool, addresses: &[String]) -> sqlx::Result<HashSet<String>> {
    let normalized: Vec<String> = addresses.iter().map(|a| normalize(a)).collect();
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT address FROM email_suppressions WHERE address = ANY($1)")
            .bind(&normalized)
            .fetch_all(pg)
            .await?;
    Ok(rows.into_iter().map(|(a,)| a).collect())
}

/// Adds an address; one already there keeps its first reason.
pub async fn add(
    pg: &PgPool,
    address: &str,
    reason: &str,
    reply: Option<&str>,
    job_id: Option<&str>,
) -> sqlx::Result<bool> {
    let added = sqlx::query(
        "INSERT INTO email_suppressions (address, reason, reply, job_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (address) DO NOTHING",
    )
    .bind(normalize(address))
    .bind(reason)
    .bind(reply)
    .bind(job_id)
    .execute(pg)
    .await?;
    Ok(added.rows_affected() == 1)
}

pub async fn remove(pg: &PgPool, address: &str) -> sqlx::Result<bool> {
    let removed = sqlx::query("DELETE FROM email_suppressions WHERE address = $1")
        .bind(normalize(address))
        .execute(pg)
        .await?;
    Ok(removed.rows_affected() == 1)
}

pub async fn list(pg: &PgPool) -> sqlx::Result<Vec<Suppression>> {
    sqlx::query_as(
        "SELECT address, reason, reply, job_id, created_at FROM email_suppressions
         ORDER BY created_at, address",
    )
    .fetch_all(pg)
    .await
}
