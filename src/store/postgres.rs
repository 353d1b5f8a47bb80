//! The PostgreSQL store, for platforms that run several guichet instances. Write transactions run
//! at READ COMMITTED and lock what they decide on: the planning rows a booking may take a seat
//! on, and the appointment being changed (`SELECT … FOR UPDATE`). The exclusion constraint
//! `appointments_no_overlap` backs this up in the schema itself. A lock wait longer than
//! [`LOCK_WAIT`], a deadlock or a serialization failure is reported as transient, and the engine
//! runs the transaction again.

use super::rows::*;
use super::{
    Backend, Claim, ClaimHolder, LOCK_WAIT, NewClosure, NewCommune, NewLocation, NewOpeningRule,
    NewPlanning, NewService, Result, Store, StoreError, StoreTx, sql,
};
use crate::domain::{
    Appointment, AppointmentId, AppointmentPlace, Closure, ClosureId, Commune, CommuneId, Location,
    LocationId, OpeningRule, OpeningRuleId, Planning, PlanningId, Service, ServiceId,
    slots::Occupied,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// Maps PostgreSQL's SQLSTATEs to the store's errors.
fn map_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            // serialization_failure, deadlock_detected, lock_not_available
            Some("40001" | "40P01" | "55P03") => return StoreError::Transient(e.to_string()),
            // unique_violation, exclusion_violation, check_violation, foreign_key_violation
            Some("23505" | "23P01" | "23514" | "23503") => {
                if let Some(name) = db.constraint() {
                    return StoreError::Constraint(name.to_owned());
                }
            }
            _ => {}
        }
    }
    StoreError::Database(e)
}

impl PgStore {
    /// `url` is a `postgres://` URL; `?options[search_path]=…` selects a schema (the tests give
    /// each test a schema of its own).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(e.to_string()))?
            .options([("lock_timeout", format!("{}ms", LOCK_WAIT.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(LOCK_WAIT * 3)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn StoreTx>> {
        Ok(Box::new(PgTx {
            tx: self.write_tx().await?,
        }))
    }

    async fn insert_commune(&self, c: &NewCommune) -> Result<CommuneId> {
        let mut tx = self.write_tx().await?;
        let hours = serde_json::to_string(&c.switchboard_hours)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id: i64 = sqlx::query_scalar(sql::INSERT_COMMUNE)
            .bind(&c.slug)
            .bind(&c.name)
            .bind(&c.insee_code)
            .bind(c.timezone.name())
            .bind(c.population)
            .bind(&c.switchboard_number)
            .bind(hours)
            .bind(c.reminder_delay_hours)
            .bind(i32::from(c.quiet_start.0))
            .bind(i32::from(c.quiet_end.0))
            .bind(&c.sms_sender)
            .bind(c.allow_multiple_per_category)
            .bind(Utc::now())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        for number in &c.phone_numbers {
            sqlx::query(sql::INSERT_PHONE_NUMBER)
                .bind(number)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(id)
    }

    async fn communes(&self) -> Result<Vec<Commune>> {
        let rows: Vec<CommuneRow> = sqlx::query_as(sql::COMMUNES)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(CommuneRow::into_domain).collect()
    }

    async fn commune(&self, id: CommuneId) -> Result<Option<Commune>> {
        let row: Option<CommuneRow> = sqlx::query_as(sql::COMMUNE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(CommuneRow::into_domain).transpose()
    }

    async fn commune_by_slug(&self, slug: &str) -> Result<Option<Commune>> {
        let row: Option<CommuneRow> = sqlx::query_as(sql::COMMUNE_BY_SLUG)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(CommuneRow::into_domain).transpose()
    }

    async fn commune_by_phone_number(&self, number: &str) -> Result<Option<Commune>> {
        let id: Option<i64> = sqlx::query_scalar(sql::COMMUNE_OF_NUMBER)
            .bind(number)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match id {
            Some(id) => self.commune(id).await,
            None => Ok(None),
        }
    }

    async fn insert_location(&self, l: &NewLocation) -> Result<LocationId> {
        sqlx::query_scalar(sql::INSERT_LOCATION)
            .bind(l.commune_id)
            .bind(&l.name)
            .bind(&l.address)
            .bind(&l.postcode)
            .bind(&l.city)
            .bind(&l.access_notes)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn locations(&self, commune: CommuneId) -> Result<Vec<Location>> {
        let rows: Vec<LocationRow> = sqlx::query_as(sql::LOCATIONS)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Location::from).collect())
    }

    async fn insert_service(&self, s: &NewService) -> Result<ServiceId> {
        sqlx::query_scalar(sql::INSERT_SERVICE)
            .bind(s.commune_id)
            .bind(&s.name)
            .bind(&s.spoken_name)
            .bind(s.category.as_str())
            .bind(s.duration_minutes)
            .bind(s.max_persons)
            .bind(s.min_notice_minutes)
            .bind(s.horizon_days)
            .bind(s.channels.web)
            .bind(s.channels.phone)
            .bind(s.channels.agent)
            .bind(&s.what_to_bring)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn services(&self, commune: CommuneId) -> Result<Vec<Service>> {
        let rows: Vec<ServiceRow> = sqlx::query_as(sql::SERVICES)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(Service::try_from).collect()
    }

    async fn service(&self, id: ServiceId) -> Result<Option<Service>> {
        let row: Option<ServiceRow> = sqlx::query_as(sql::SERVICE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(Service::try_from).transpose()
    }

    async fn insert_planning(&self, p: &NewPlanning) -> Result<PlanningId> {
        sqlx::query_scalar(sql::INSERT_PLANNING)
            .bind(p.commune_id)
            .bind(&p.name)
            .bind(p.capacity)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn plannings(&self, commune: CommuneId) -> Result<Vec<Planning>> {
        let rows: Vec<PlanningRow> = sqlx::query_as(sql::PLANNINGS)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Planning::from).collect())
    }

    async fn insert_opening_rule(&self, r: &NewOpeningRule) -> Result<OpeningRuleId> {
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(sql::INSERT_RULE)
            .bind(r.planning_id)
            .bind(r.location_id)
            .bind(i32::from(r.weekdays.0))
            .bind(i32::from(r.start.0))
            .bind(i32::from(r.end.0))
            .bind(r.step_minutes)
            .bind(r.valid_from)
            .bind(r.valid_until)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        for service in &r.service_ids {
            sqlx::query(sql::INSERT_RULE_SERVICE)
                .bind(id)
                .bind(service)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(id)
    }

    async fn opening_rules(&self, commune: CommuneId) -> Result<Vec<OpeningRule>> {
        let rules: Vec<RuleRow> = sqlx::query_as(sql::RULES)
            .bind(commune)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rules.into_iter().map(OpeningRule::try_from).collect()
    }

    async fn insert_closure(&self, c: &NewClosure) -> Result<ClosureId> {
        sqlx::query_scalar(sql::INSERT_CLOSURE)
            .bind(c.commune_id)
            .bind(c.planning_id)
            .bind(c.location_id)
            .bind(c.starts_at)
            .bind(c.ends_at)
            .bind(&c.reason)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn closures(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Closure>> {
        let rows: Vec<ClosureRow> = sqlx::query_as(sql::CLOSURES)
            .bind(commune)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Closure::from).collect())
    }

    async fn occupancy(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Occupied>> {
        let rows: Vec<OccupiedRow> = sqlx::query_as(sql::OCCUPANCY)
            .bind(commune)
            .bind(from)
            .bind(to)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows.into_iter().map(Occupied::from).collect())
    }

    async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>> {
        let row: Option<AppointmentRow> = sqlx::query_as(sql::APPOINTMENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(Appointment::try_from).transpose()
    }

    async fn appointments(
        &self,
        commune: CommuneId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Appointment>> {
        let rows: Vec<AppointmentRow> = sqlx::query_as(sql::APPOINTMENTS)
            .bind(commune)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(Appointment::try_from).collect()
    }

    async fn appointment_place(&self, id: AppointmentId) -> Result<Option<AppointmentPlace>> {
        let row: Option<PlaceRow> = sqlx::query_as(sql::APPOINTMENT_PLACE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(AppointmentPlace::try_from).transpose()
    }
}

pub struct PgTx {
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl StoreTx for PgTx {
    async fn lock_planning(&mut self, id: PlanningId) -> Result<Option<Planning>> {
        let row: Option<PlanningRow> = sqlx::query_as(sql::PLANNING_FOR_UPDATE)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(row.map(Planning::from))
    }

    async fn release_expired_holds(
        &mut self,
        planning: PlanningId,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let done = sqlx::query(sql::RELEASE_EXPIRED)
            .bind(planning)
            .bind(now)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn busy_seats(
        &mut self,
        planning: PlanningId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<i32>> {
        sqlx::query_scalar(sql::BUSY_SEATS)
            .bind(planning)
            .bind(start)
            .bind(end)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(map_err)
    }

    async fn appointment(&mut self, id: AppointmentId) -> Result<Option<Appointment>> {
        let row: Option<AppointmentRow> = sqlx::query_as(sql::APPOINTMENT_FOR_UPDATE)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        row.map(Appointment::try_from).transpose()
    }

    async fn insert_appointment(&mut self, a: &Appointment) -> Result<()> {
        sqlx::query(sql::INSERT_APPOINTMENT)
            .bind(a.id)
            .bind(a.commune_id)
            .bind(a.planning_id)
            .bind(a.location_id)
            .bind(a.service_id)
            .bind(a.starts_at)
            .bind(a.ends_at)
            .bind(a.seat)
            .bind(a.persons)
            .bind(a.citizen.name.as_str())
            .bind(a.citizen.phone.as_ref().map(|p| p.as_str()))
            .bind(a.citizen.email.as_ref().map(|e| e.as_str()))
            .bind(ants_ids_text(a))
            .bind(a.channel.as_str())
            .bind(a.status.as_str())
            .bind(a.hold_expires_at)
            .bind(a.replaces_id)
            .bind(&a.cancel_reason)
            .bind(a.version)
            .bind(a.created_at)
            .bind(a.updated_at)
            .bind(a.confirmed_at)
            .bind(a.cancelled_at)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn update_appointment(&mut self, a: &Appointment) -> Result<()> {
        sqlx::query(sql::UPDATE_APPOINTMENT)
            .bind(a.id)
            .bind(a.planning_id)
            .bind(a.location_id)
            .bind(a.starts_at)
            .bind(a.ends_at)
            .bind(a.seat)
            .bind(a.persons)
            .bind(a.citizen.name.as_str())
            .bind(a.citizen.phone.as_ref().map(|p| p.as_str()))
            .bind(a.citizen.email.as_ref().map(|e| e.as_str()))
            .bind(ants_ids_text(a))
            .bind(a.status.as_str())
            .bind(a.hold_expires_at)
            .bind(&a.cancel_reason)
            .bind(a.version)
            .bind(a.updated_at)
            .bind(a.confirmed_at)
            .bind(a.cancelled_at)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn claim(
        &mut self,
        claim: &Claim,
        holder: &ClaimHolder,
        now: DateTime<Utc>,
    ) -> Result<Option<AppointmentId>> {
        let (category, kind) = (claim.category.as_str(), claim.kind.as_str());
        // Claims on one identity are decided one transaction at a time (the constraints below
        // are the backstop); SQLite gets this from BEGIN IMMEDIATE.
        sqlx::query(sql::LOCK_IDENTITY)
            .bind(category)
            .bind(kind)
            .bind(&claim.key)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        sqlx::query(sql::DELETE_STALE_CLAIM)
            .bind(category)
            .bind(kind)
            .bind(&claim.key)
            .bind(now)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        let conflicting: Option<AppointmentId> = sqlx::query_scalar(sql::CONFLICTING_CLAIM)
            .bind(category)
            .bind(kind)
            .bind(&claim.key)
            .bind(holder.appointment)
            .bind(holder.commune)
            .bind(holder.exclusive)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?;
        if conflicting.is_some() {
            return Ok(conflicting);
        }
        // Inserting twice for the same appointment is a no-op.
        sqlx::query(sql::INSERT_CLAIM)
            .bind(category)
            .bind(kind)
            .bind(&claim.key)
            .bind(holder.appointment)
            .bind(holder.commune)
            .bind(holder.exclusive)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(None)
    }

    async fn release_claims(&mut self, appointment: AppointmentId) -> Result<()> {
        sqlx::query(sql::RELEASE_CLAIMS)
            .bind(appointment)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn transfer_claims(&mut self, from: AppointmentId, to: AppointmentId) -> Result<()> {
        sqlx::query(sql::TRANSFER_CLAIMS)
            .bind(from)
            .bind(to)
            .execute(&mut *self.tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.map_err(map_err)
    }
}
