//! The store methods whose SQL and code are the same on SQLite and PostgreSQL, written once.
//! Each backend module invokes these macros inside its `impl` blocks after defining what
//! differs: `ts`/`opt_ts` (how an instant is bound), `map_err` (error codes), the locking
//! statements (`APPOINTMENT_LOCKED`, `CLAIM_NOTIFICATIONS`), `lock_key`, and
//! how writes are made: `write_conn()` (a connection to write on, the writer's turn on SQLite)
//! and `write_tx()` (a write transaction), queried with `wquery`, `wquery_as` and
//! `wquery_scalar` (sqlx's builders on PostgreSQL; on SQLite the direct write connection's, see
//! `sqlite_direct`). Reads go through `self.pool` with sqlx's builders, but for the few every
//! booking makes: `read_conn()` with `rquery_as` and `rquery_scalar` (on SQLite, a
//! read connection used on the calling thread).
//! Names in the bodies resolve where the macro is invoked.

/// `impl Store for $store { <the backend's own methods> <the shared ones> }`; a backend gives
/// `backend`, `migrate`, `begin` and `occupancy`. (The whole `impl` comes from the macro so that
/// `#[async_trait]` sees every method.)
macro_rules! impl_store {
    ($store:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl Store for $store {
        $($own)*
            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn insert_commune(&self, c: &NewCommune) -> Result<CommuneId> {
                let (_writer, mut tx) = self.write_tx().await?;
                let hours = serde_json::to_string(&c.switchboard_hours)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let id: i64 = wquery_scalar(sql::INSERT_COMMUNE)
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
                    .bind(c.sms_daily_budget)
                    .bind(c.allow_foreign_mobiles)
                    .bind(ts(Utc::now()))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for number in &c.phone_numbers {
                    wquery(sql::INSERT_PHONE_NUMBER)
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
                let mut w = self.write_conn().await?;
                wquery_scalar(sql::INSERT_LOCATION)
                    .bind(l.commune_id)
                    .bind(&l.name)
                    .bind(&l.address)
                    .bind(&l.postcode)
                    .bind(&l.city)
                    .bind(&l.access_notes)
                    .fetch_one(&mut *w)
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
                let mut w = self.write_conn().await?;
                wquery_scalar(sql::INSERT_SERVICE)
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
                    .fetch_one(&mut *w)
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
                let mut w = self.write_conn().await?;
                wquery_scalar(sql::INSERT_PLANNING)
                    .bind(p.commune_id)
                    .bind(&p.name)
                    .bind(p.capacity)
                    .fetch_one(&mut *w)
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
                let (_writer, mut tx) = self.write_tx().await?;
                let id: i64 = wquery_scalar(sql::INSERT_RULE)
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
                    wquery(sql::INSERT_RULE_SERVICE)
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
                let mut w = self.write_conn().await?;
                wquery_scalar(sql::INSERT_CLOSURE)
                    .bind(c.commune_id)
                    .bind(c.planning_id)
                    .bind(c.location_id)
                    .bind(ts(c.starts_at))
                    .bind(ts(c.ends_at))
                    .bind(&c.reason)
                    .fetch_one(&mut *w)
                    .await
                    .map_err(map_err)
            }

            async fn closures(
                &self,
                commune: CommuneId,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<Closure>> {
                let rows: Vec<ClosureRow> = rquery_as(sql::CLOSURES)
                    .bind(commune)
                    .bind(ts(from))
                    .bind(ts(to))
                    .fetch_all(&mut *self.read_conn().await?)
                    .await
                    .map_err(map_err)?;
                Ok(rows.into_iter().map(Closure::from).collect())
            }

            async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>> {
                let row: Option<AppointmentRow> = rquery_as(sql::APPOINTMENT)
                    .bind(id)
                    .fetch_optional(&mut *self.read_conn().await?)
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
                    .bind(ts(from))
                    .bind(ts(to))
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

            async fn appointment_by_token(&self, token_hash: &str) -> Result<Option<Appointment>> {
                let row: Option<AppointmentRow> = sqlx::query_as(sql::APPOINTMENT_BY_TOKEN)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(Appointment::try_from).transpose()
            }

            async fn last_messaged_appointment(
                &self,
                phone: &str,
            ) -> Result<Option<AppointmentId>> {
                sqlx::query_scalar(sql::LAST_MESSAGED_APPOINTMENT)
                    .bind(phone)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn next_appointment_of_phone(
                &self,
                phone: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<Appointment>> {
                let row: Option<AppointmentRow> = sqlx::query_as(sql::NEXT_APPOINTMENT_OF_PHONE)
                    .bind(phone)
                    .bind(ts(now))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(Appointment::try_from).transpose()
            }

            async fn upcoming_appointments_of(
                &self,
                phone: Option<&str>,
                email: Option<&str>,
                now: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<Appointment>> {
                let rows: Vec<AppointmentRow> = sqlx::query_as(sql::UPCOMING_APPOINTMENTS_OF)
                    .bind(phone)
                    .bind(email)
                    .bind(ts(now))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.into_iter().map(Appointment::try_from).collect()
            }

            async fn start_call(
                &self,
                call_sid: &str,
                commune: CommuneId,
                caller: &str,
                state: &str,
                twiml: &str,
                now: DateTime<Utc>,
            ) -> Result<bool> {
                let mut w = self.write_conn().await?;
                let done = wquery(sql::START_CALL)
                    .bind(call_sid)
                    .bind(commune)
                    .bind(caller)
                    .bind(state)
                    .bind(twiml)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn call(&self, call_sid: &str) -> Result<Option<CallRecord>> {
                let row: Option<CallRow> = sqlx::query_as(sql::CALL)
                    .bind(call_sid)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(CallRecord::from))
            }

            async fn claim_call_step(
                &self,
                call_sid: &str,
                seq: i64,
                now: DateTime<Utc>,
            ) -> Result<bool> {
                let mut w = self.write_conn().await?;
                let done = wquery(sql::CLAIM_CALL_STEP)
                    .bind(call_sid)
                    .bind(seq)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn advance_call(
                &self,
                call_sid: &str,
                seq: i64,
                state: &str,
                twiml: &str,
                outcome: Option<&str>,
                spoken_name: Option<&str>,
                now: DateTime<Utc>,
            ) -> Result<bool> {
                let mut w = self.write_conn().await?;
                let done = wquery(sql::ADVANCE_CALL)
                    .bind(call_sid)
                    .bind(seq)
                    .bind(state)
                    .bind(twiml)
                    .bind(outcome)
                    .bind(spoken_name)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn end_call(
                &self,
                call_sid: &str,
                outcome: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<CallRecord>> {
                let mut w = self.write_conn().await?;
                let row: Option<CallRow> = wquery_as(sql::END_CALL)
                    .bind(call_sid)
                    .bind(outcome)
                    .bind(ts(now))
                    .fetch_optional(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(CallRecord::from))
            }

            async fn voice_settings(&self, commune: CommuneId) -> Result<Option<VoiceSettings>> {
                let row: Option<(String, String, String)> = sqlx::query_as(sql::VOICE_SETTINGS)
                    .bind(commune)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(|(voice, language, flow)| VoiceSettings {
                    voice,
                    language,
                    flow,
                }))
            }

            async fn set_voice_settings(
                &self,
                commune: CommuneId,
                settings: &VoiceSettings,
            ) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::SET_VOICE_SETTINGS)
                    .bind(commune)
                    .bind(&settings.voice)
                    .bind(&settings.language)
                    .bind(&settings.flow)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn claim_notifications(
                &self,
                worker: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<Notification>> {
                let mut w = self.write_conn().await?;
                let rows: Vec<NotificationRow> = wquery_as(CLAIM_NOTIFICATIONS)
                    .bind(worker)
                    .bind(ts(now))
                    .bind(ts(lease_until))
                    .bind(limit)
                    .fetch_all(&mut *w)
                    .await
                    .map_err(map_err)?;
                rows.into_iter().map(Notification::try_from).collect()
            }

            async fn abandon_stale_sends(&self, now: DateTime<Utc>) -> Result<u64> {
                let mut w = self.write_conn().await?;
                let done = wquery(sql::ABANDON_STALE_SENDS)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }

            async fn record_delivery(
                &self,
                id: Option<NotificationId>,
                provider_id: &str,
                delivery_status: &str,
                error: Option<&str>,
                now: DateTime<Utc>,
            ) -> Result<bool> {
                let mut w = self.write_conn().await?;
                let statement = if id.is_some() {
                    sql::RECORD_DELIVERY_BY_ID
                } else {
                    sql::RECORD_DELIVERY_BY_PROVIDER_ID
                };
                let done = wquery(statement)
                    .bind(id)
                    .bind(provider_id)
                    .bind(delivery_status)
                    .bind(error)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn notification(&self, id: NotificationId) -> Result<Option<Notification>> {
                let row: Option<NotificationRow> = sqlx::query_as(sql::NOTIFICATION)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(Notification::try_from).transpose()
            }

            async fn notifications_of(&self, appointment: AppointmentId) -> Result<Vec<Notification>> {
                let rows: Vec<NotificationRow> = sqlx::query_as(sql::NOTIFICATIONS_OF)
                    .bind(appointment)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.into_iter().map(Notification::try_from).collect()
            }

            async fn record_sent_message(
                &self,
                m: &NewNotification,
                segments: i32,
                cost_micro_eur: i64,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let mut w = self.write_conn().await?;
                bind_new_notification!(wquery(sql::INSERT_SENT_MESSAGE), m)
                    .bind(segments)
                    .bind(cost_micro_eur)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn sms_sent(
                &self,
                commune: CommuneId,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<(DateTime<Utc>, i32, i64)>> {
                sqlx::query_as(sql::SMS_SENT)
                    .bind(commune)
                    .bind(ts(from))
                    .bind(ts(to))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn shared_secret(&self, name: &str, fresh: &str) -> Result<String> {
                let mut w = self.write_conn().await?;
                wquery(sql::INSERT_SETTING)
                    .bind(name)
                    .bind(fresh)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                wquery_scalar(sql::SETTING)
                    .bind(name)
                    .fetch_one(&mut *w)
                    .await
                    .map_err(map_err)
            }

            async fn setting(&self, name: &str) -> Result<Option<String>> {
                sqlx::query_scalar(sql::SETTING)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn begin_idempotent(
                &self,
                scope: &str,
                key: &str,
                request_hash: &str,
                now: DateTime<Utc>,
            ) -> Result<IdempotencyState> {
                let mut w = self.write_conn().await?;
                wquery(sql::DELETE_OLD_KEYS)
                    .bind(ts(now - chrono::Duration::hours(24)))
                    .bind(scope)
                    .bind(key)
                    .bind(ts(now - chrono::Duration::minutes(1)))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                let inserted = wquery(sql::INSERT_KEY)
                    .bind(scope)
                    .bind(key)
                    .bind(request_hash)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                if inserted.rows_affected() == 1 {
                    return Ok(IdempotencyState::Started);
                }
                let row: Option<(String, Option<i32>, Option<String>)> = wquery_as(sql::KEY)
                    .bind(scope)
                    .bind(key)
                    .fetch_optional(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(match row {
                    // Forgotten in between: let the client try again.
                    None => IdempotencyState::InProgress,
                    Some((hash, _, _)) if hash != request_hash => IdempotencyState::Mismatch,
                    Some((_, Some(status), Some(body))) => IdempotencyState::Replay {
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                    },
                    Some(_) => IdempotencyState::InProgress,
                })
            }

            async fn finish_idempotent(
                &self,
                scope: &str,
                key: &str,
                status: u16,
                body: &str,
            ) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::FINISH_KEY)
                    .bind(scope)
                    .bind(key)
                    .bind(i32::from(status))
                    .bind(body)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn forget_idempotent(&self, scope: &str, key: &str) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::FORGET_KEY)
                    .bind(scope)
                    .bind(key)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn insert_agent(&self, a: &NewAgent, now: DateTime<Utc>) -> Result<AgentId> {
                let mut w = self.write_conn().await?;
                wquery_scalar(sql::INSERT_AGENT)
                    .bind(&a.email)
                    .bind(&a.name)
                    .bind(&a.password_hash)
                    .bind(a.role.as_str())
                    .bind(a.commune_id)
                    .bind(ts(now))
                    .fetch_one(&mut *w)
                    .await
                    .map_err(map_err)
            }

            async fn agent_by_email(&self, email: &str) -> Result<Option<Agent>> {
                let row: Option<AgentRow> = sqlx::query_as(sql::AGENT_BY_EMAIL)
                    .bind(email)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(Agent::try_from).transpose()
            }

            async fn agent(&self, id: AgentId) -> Result<Option<Agent>> {
                let row: Option<AgentRow> = sqlx::query_as(sql::AGENT)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(Agent::try_from).transpose()
            }

            async fn agents(&self, commune: Option<CommuneId>) -> Result<Vec<Agent>> {
                let rows: Vec<AgentRow> = match commune {
                    Some(c) => sqlx::query_as(sql::AGENTS_OF).bind(c).fetch_all(&self.pool).await,
                    None => sqlx::query_as(sql::ALL_AGENTS).fetch_all(&self.pool).await,
                }
                .map_err(map_err)?;
                rows.into_iter().map(Agent::try_from).collect()
            }

            async fn set_agent_active(&self, id: AgentId, active: bool) -> Result<()> {
                let (_writer, mut tx) = self.write_tx().await?;
                wquery(sql::SET_AGENT_ACTIVE)
                    .bind(id)
                    .bind(active)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if !active {
                    wquery(sql::DELETE_AGENT_SESSIONS)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }

            async fn insert_session(
                &self,
                token_hash: &str,
                agent: AgentId,
                now: DateTime<Utc>,
                expires_at: DateTime<Utc>,
            ) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::INSERT_SESSION)
                    .bind(token_hash)
                    .bind(agent)
                    .bind(ts(now))
                    .bind(ts(expires_at))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn session_agent(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<Agent>> {
                let row: Option<AgentRow> = sqlx::query_as(sql::SESSION_AGENT)
                    .bind(token_hash)
                    .bind(ts(now))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(Agent::try_from).transpose()
            }

            async fn delete_session(&self, token_hash: &str) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::DELETE_SESSION)
                    .bind(token_hash)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn record_signin_failure(
                &self,
                key: &str,
                now: DateTime<Utc>,
                since: DateTime<Utc>,
            ) -> Result<i64> {
                let (_writer, mut tx) = self.write_tx().await?;
                lock_key(&mut tx, key).await?;
                wquery(sql::FORGET_OLD_FAILURES)
                    .bind(ts(since))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                wquery(sql::INSERT_FAILURE)
                    .bind(key)
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let count: i64 = wquery_scalar(sql::COUNT_FAILURES)
                    .bind(key)
                    .bind(ts(since))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(count)
            }

            async fn signin_failures(&self, key: &str, since: DateTime<Utc>) -> Result<i64> {
                sqlx::query_scalar(sql::COUNT_FAILURES)
                    .bind(key)
                    .bind(ts(since))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn clear_signin_failures(&self, key: &str) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::CLEAR_FAILURES)
                    .bind(key)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn insert_audit(&self, e: &AuditEntry) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::INSERT_AUDIT)
                    .bind(e.commune_id)
                    .bind(e.agent_id)
                    .bind(&e.agent_email)
                    .bind(ts(e.at))
                    .bind(&e.action)
                    .bind(&e.detail)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn audit_log(&self, commune: CommuneId, limit: i64) -> Result<Vec<AuditEntry>> {
                let rows: Vec<AuditRow> = sqlx::query_as(sql::AUDIT_LOG)
                    .bind(commune)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(rows.into_iter().map(AuditEntry::from).collect())
            }

            async fn search_appointments(
                &self,
                commune: CommuneId,
                needle: &str,
                limit: i64,
                now: DateTime<Utc>,
            ) -> Result<Vec<Appointment>> {
                // LIKE patterns with the wildcards of the needle taken literally.
                let pattern = |text: &str| -> String {
                    let escaped: String = text
                        .chars()
                        .flat_map(|c| match c {
                            '\\' | '%' | '_' => vec!['\\', c],
                            c => vec![c],
                        })
                        .collect();
                    format!("%{escaped}%")
                };
                let folded = crate::domain::wording::folded(needle);
                let rows: Vec<AppointmentRow> = sqlx::query_as(sql::SEARCH_APPOINTMENTS)
                    .bind(commune)
                    .bind(pattern(&needle.trim().to_lowercase()))
                    .bind(limit)
                    .bind(ts(now))
                    .bind(pattern(&folded))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.into_iter().map(Appointment::try_from).collect()
            }

            async fn calls_between(
                &self,
                commune: CommuneId,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
            ) -> Result<Vec<CallRecord>> {
                let rows: Vec<CallRow> = sqlx::query_as(sql::CALLS_BETWEEN)
                    .bind(commune)
                    .bind(ts(from))
                    .bind(ts(to))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(rows.into_iter().map(CallRecord::from).collect())
            }

            async fn update_commune_settings(&self, id: CommuneId, c: &CommuneSettings) -> Result<()> {
                let mut w = self.write_conn().await?;
                let hours = serde_json::to_string(&c.switchboard_hours)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                wquery(sql::UPDATE_COMMUNE_SETTINGS)
                    .bind(id)
                    .bind(&c.switchboard_number)
                    .bind(hours)
                    .bind(c.reminder_delay_hours)
                    .bind(i32::from(c.quiet_start.0))
                    .bind(i32::from(c.quiet_end.0))
                    .bind(&c.sms_sender)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn update_commune_platform(
                &self,
                id: CommuneId,
                c: &CommunePlatformSettings,
            ) -> Result<()> {
                let (_writer, mut tx) = self.write_tx().await?;
                wquery(sql::UPDATE_COMMUNE_PLATFORM)
                    .bind(id)
                    .bind(&c.name)
                    .bind(c.population)
                    .bind(c.sms_daily_budget)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                wquery(sql::DELETE_PHONE_NUMBERS)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for number in &c.phone_numbers {
                    wquery(sql::INSERT_PHONE_NUMBER)
                        .bind(number)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }

            async fn update_location(&self, l: &Location) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::UPDATE_LOCATION)
                    .bind(l.id)
                    .bind(&l.name)
                    .bind(&l.address)
                    .bind(&l.postcode)
                    .bind(&l.city)
                    .bind(&l.access_notes)
                    .bind(l.active)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn update_service(&self, s: &Service) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::UPDATE_SERVICE)
                    .bind(s.id)
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
                    .bind(s.active)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn update_planning(&self, p: &Planning) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::UPDATE_PLANNING)
                    .bind(p.id)
                    .bind(&p.name)
                    .bind(p.capacity)
                    .bind(p.active)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn update_opening_rule(&self, id: OpeningRuleId, r: &NewOpeningRule) -> Result<()> {
                let (_writer, mut tx) = self.write_tx().await?;
                wquery(sql::UPDATE_RULE)
                    .bind(id)
                    .bind(r.planning_id)
                    .bind(r.location_id)
                    .bind(i32::from(r.weekdays.0))
                    .bind(i32::from(r.start.0))
                    .bind(i32::from(r.end.0))
                    .bind(r.step_minutes)
                    .bind(r.valid_from)
                    .bind(r.valid_until)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                wquery(sql::DELETE_RULE_SERVICES)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for service in &r.service_ids {
                    wquery(sql::INSERT_RULE_SERVICE)
                        .bind(id)
                        .bind(service)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            }

            async fn delete_opening_rule(&self, id: OpeningRuleId) -> Result<()> {
                let (_writer, mut tx) = self.write_tx().await?;
                wquery(sql::DELETE_RULE_SERVICES)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                wquery(sql::DELETE_RULE)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }

            async fn delete_closure(&self, id: ClosureId) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::DELETE_CLOSURE)
                    .bind(id)
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn pending_reminders(
                &self,
                commune: CommuneId,
            ) -> Result<Vec<(NotificationId, DateTime<Utc>, Option<DateTime<Utc>>)>> {
                sqlx::query_as(sql::PENDING_REMINDERS)
                    .bind(commune)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn reschedule(
                &self,
                id: NotificationId,
                due_at: Option<DateTime<Utc>>,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let mut w = self.write_conn().await?;
                match due_at {
                    Some(due) => wquery(sql::RESCHEDULE)
                        .bind(id)
                        .bind(ts(due))
                        .bind(ts(now))
                        .execute(&mut *w)
                        .await,
                    None => wquery(sql::CANCEL_NOTIFICATION)
                        .bind(id)
                        .bind(ts(now))
                        .execute(&mut *w)
                        .await,
                }
                .map_err(map_err)?;
                Ok(())
            }

            async fn add_sms_opt_out(&self, phone: &str, now: DateTime<Utc>) -> Result<()> {
                let mut w = self.write_conn().await?;
                wquery(sql::INSERT_OPT_OUT)
                    .bind(phone)
                    .bind(ts(now))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn is_sms_opted_out(&self, phone: &str) -> Result<bool> {
                let count: i64 = rquery_scalar(sql::OPT_OUT)
                    .bind(phone)
                    .fetch_one(&mut *self.read_conn().await?)
                    .await
                    .map_err(map_err)?;
                Ok(count > 0)
            }

            async fn set_sms_conversation(
                &self,
                phone: &str,
                appointment: AppointmentId,
                action: SmsAction,
                expires_at: DateTime<Utc>,
            ) -> Result<()> {
                let mut w = self.write_conn().await?;
                let action = action.as_str();
                wquery(sql::PUT_CONVERSATION)
                    .bind(phone)
                    .bind(appointment)
                    .bind(action)
                    .bind(ts(expires_at))
                    .execute(&mut *w)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn take_sms_conversation(
                &self,
                phone: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<(AppointmentId, SmsAction)>> {
                let mut w = self.write_conn().await?;
                let row: Option<(AppointmentId, String, DateTime<Utc>)> =
                    wquery_as(sql::TAKE_CONVERSATION)
                        .bind(phone)
                        .fetch_optional(&mut *w)
                        .await
                        .map_err(map_err)?;
                Ok(row.and_then(|(appointment, action, expires_at)| {
                    (expires_at > now)
                        .then(|| SmsAction::parse(&action))
                        .flatten()
                        .map(|action| (appointment, action))
                }))
            }

        }
    };
}

/// The statement that records how sending notification `$id` ended (`$result`, a
/// [`SendResult`](crate::store::SendResult)), by worker `$worker` at `$now`; built with the
/// `wquery` of the place it is expanded in.
macro_rules! finish_statement {
    ($id:expr, $result:expr, $worker:expr, $now:expr) => {{
        let (id, result, worker, now) = ($id, $result, $worker, $now);
        match result {
            SendResult::Sent {
                provider_id,
                segments,
                cost_micro_eur,
                kept_body,
            } => wquery(sql::FINISH_SENT)
                .bind(id)
                .bind(worker)
                .bind(provider_id.clone())
                .bind(*segments)
                .bind(*cost_micro_eur)
                .bind(ts(now))
                .bind(kept_body.clone()),
            SendResult::Retry { due_at, error } => wquery(sql::FINISH_RETRY)
                .bind(id)
                .bind(worker)
                .bind(ts(*due_at))
                .bind(error.clone())
                .bind(ts(now)),
            SendResult::Failed { error } | SendResult::Cancelled { reason: error } => {
                let status = if matches!(result, SendResult::Failed { .. }) {
                    NotificationStatus::Failed
                } else {
                    NotificationStatus::Cancelled
                };
                wquery(sql::FINISH_OTHER)
                    .bind(id)
                    .bind(worker)
                    .bind(status.as_str())
                    .bind(error.clone())
                    .bind(None::<i32>)
                    .bind(None::<i64>)
                    .bind(ts(now))
            }
            SendResult::Unknown {
                error,
                segments,
                cost_micro_eur,
            } => wquery(sql::FINISH_OTHER)
                .bind(id)
                .bind(worker)
                .bind(NotificationStatus::Unknown.as_str())
                .bind(error.clone())
                .bind(Some(*segments))
                .bind(Some(*cost_micro_eur))
                .bind(ts(now)),
        }
    }};
}

/// The seats taken in commune `$1` over `[$2, $3)` at `$4` (a hold counts until its expiry, the
/// rest of the seat-taking statuses always), looking back to `$5`
/// ([`crate::store::looked_back_from`] `$2`): the rows of the occupancy read, which PostgreSQL
/// returns one by one and SQLite packs into one ([`sql::OCCUPANCY`]).
macro_rules! occupied_in_span {
    () => {
        "FROM appointments WHERE commune_id = $1 AND starts_at < $3 AND ends_at > $2 \
         AND starts_at > $5 AND seat IS NOT NULL AND (status <> 'held' OR hold_expires_at > $4)"
    };
}

/// PostgreSQL: the id of the advisory lock named by the SQL text `$key` (a parameter). Advisory
/// locks are shared by the whole database: the name is taken within the schema, so that two
/// installations in two schemas of one database (or the tests, a schema each) do not hold each
/// other's — a booking does not wait for a seat whose lock is held, it counts it taken.
macro_rules! lock_id {
    ($key:literal) => {
        concat!("hashtext(current_schema() || ", $key, ")")
    };
}

/// PostgreSQL: whether the locks of buckets `$first..=$last` of `$key` (SQL text, parameters)
/// were all free, taken without waiting by this transaction.
macro_rules! try_bucket_locks {
    ($key:literal, $first:literal, $last:literal) => {
        concat!(
            "(SELECT bool_and(pg_try_advisory_xact_lock(",
            lock_id!($key),
            ", b)) FROM generate_series(",
            $first,
            ", ",
            $last,
            ") AS b)"
        )
    };
}

/// `$query` with the notification `$n` bound as its next twelve parameters, in the order of
/// [`sql::INSERT_NOTIFICATION`]'s first twelve (which [`sql::INSERT_SENT_MESSAGE`] shares).
macro_rules! bind_new_notification {
    ($query:expr, $n:expr) => {{
        let n: &NewNotification = $n;
        $query
            .bind(n.id)
            .bind(n.commune_id)
            .bind(n.appointment_id)
            .bind(n.kind.as_str())
            .bind(n.channel.as_str())
            .bind(&n.destination)
            .bind(&n.dedupe_key)
            .bind(&n.subject)
            .bind(&n.body)
            .bind(&n.html)
            .bind(&n.ics)
            .bind(ts(n.due_at))
    }};
}

/// `$query` ([`sql::INSERT_APPOINTMENT`], or a statement that begins with its parameters) with
/// the appointment `$a` bound.
macro_rules! bind_new_appointment {
    ($query:expr, $a:expr) => {{
        let a: &Appointment = $a;
        $query
            .bind(a.id)
            .bind(a.commune_id)
            .bind(a.planning_id)
            .bind(a.location_id)
            .bind(a.service_id)
            .bind(ts(a.starts_at))
            .bind(ts(a.ends_at))
            .bind(a.seat)
            .bind(a.persons)
            .bind(a.citizen.name.as_str())
            .bind(a.citizen.phone.as_ref().map(|p| p.as_str()))
            .bind(a.citizen.email.as_ref().map(|e| e.as_str()))
            .bind(ants_ids_text(a))
            .bind(a.channel.as_str())
            .bind(a.status.as_str())
            .bind(opt_ts(a.hold_expires_at))
            .bind(a.replaces_id)
            .bind(&a.cancel_reason)
            .bind(a.version)
            .bind(ts(a.created_at))
            .bind(ts(a.updated_at))
            .bind(opt_ts(a.confirmed_at))
            .bind(opt_ts(a.cancelled_at))
            .bind(crate::domain::wording::folded(a.citizen.name.as_str()))
    }};
}

/// `$query` ([`sql::UPDATE_APPOINTMENT`], or a statement that begins with its parameters) with
/// the appointment `$a`'s mutable fields bound.
macro_rules! bind_appointment_update {
    ($query:expr, $a:expr) => {{
        let a: &Appointment = $a;
        $query
            .bind(a.id)
            .bind(a.planning_id)
            .bind(a.location_id)
            .bind(ts(a.starts_at))
            .bind(ts(a.ends_at))
            .bind(a.seat)
            .bind(a.persons)
            .bind(a.citizen.name.as_str())
            .bind(a.citizen.phone.as_ref().map(|p| p.as_str()))
            .bind(a.citizen.email.as_ref().map(|e| e.as_str()))
            .bind(ants_ids_text(a))
            .bind(a.status.as_str())
            .bind(opt_ts(a.hold_expires_at))
            .bind(&a.cancel_reason)
            .bind(a.version)
            .bind(ts(a.updated_at))
            .bind(opt_ts(a.confirmed_at))
            .bind(opt_ts(a.cancelled_at))
            .bind(crate::domain::wording::folded(a.citizen.name.as_str()))
    }};
}

/// `impl StoreTx for $tx { … }`, likewise; a backend gives `commit`, and the query builders
/// `query`, `query_as` and `query_scalar` with sqlx's shape (PostgreSQL: sqlx's own; SQLite: the
/// direct write connection's, see `sqlite_direct`).
macro_rules! impl_store_tx {
    ($tx:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl StoreTx for $tx {
        $($own)*
            async fn planning(&mut self, id: PlanningId) -> Result<Option<Planning>> {
                let row: Option<PlanningRow> = query_as(sql::PLANNING)
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
                let done = query(sql::RELEASE_EXPIRED)
                    .bind(planning)
                    .bind(ts(now))
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
                query_scalar(sql::BUSY_SEATS)
                    .bind(planning)
                    .bind(ts(start))
                    .bind(ts(end))
                    .bind(ts(crate::store::looked_back_from(start)))
                    .fetch_all(&mut *self.tx)
                    .await
                    .map_err(map_err)
            }

            async fn closed(
                &mut self,
                commune: CommuneId,
                planning: PlanningId,
                location: LocationId,
                start: DateTime<Utc>,
                end: DateTime<Utc>,
            ) -> Result<bool> {
                let count: i64 = query_scalar(sql::CLOSED)
                    .bind(commune)
                    .bind(planning)
                    .bind(location)
                    .bind(ts(start))
                    .bind(ts(end))
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(count > 0)
            }

            async fn appointment(&mut self, id: AppointmentId) -> Result<Option<Appointment>> {
                let row: Option<AppointmentRow> = query_as(APPOINTMENT_LOCKED)
                    .bind(id)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                row.map(Appointment::try_from).transpose()
            }

            async fn insert_appointment(&mut self, a: &Appointment) -> Result<()> {
                bind_new_appointment!(query(sql::INSERT_APPOINTMENT), a)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn update_appointment(&mut self, a: &Appointment) -> Result<()> {
                bind_appointment_update!(query(sql::UPDATE_APPOINTMENT), a)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn claim(
                &mut self,
                claim: &Claim,
                holder: &ClaimHolder,
                destination: Option<&str>,
                now: DateTime<Utc>,
            ) -> Result<Option<AppointmentId>> {
                let (category, kind) = (claim.category.as_str(), claim.kind.as_str());
                // Claims on one identity are decided one transaction at a time (the schema is the
                // backstop).
                let lock = crate::store::claim_lock(claim);
                let mut destination = destination.map(crate::store::destination_lock);
                let mut looked_again = false;
                loop {
                    let locks = (lock.as_str(), destination.take());
                    delete_stale_claims_locked(&mut self.tx, locks, claim, now).await?;
                    let inserted = query(sql::INSERT_CLAIM)
                        .bind(category)
                        .bind(kind)
                        .bind(&claim.key)
                        .bind(holder.appointment)
                        .bind(holder.commune)
                        .bind(holder.exclusive)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(map_err)?;
                    if inserted.rows_affected() == 1 {
                        return Ok(None);
                    }
                    // Not inserted: another claim conflicts, or this one was already there.
                    let other: Option<AppointmentId> = query_scalar(sql::CONFLICTING_CLAIM)
                        .bind(category)
                        .bind(kind)
                        .bind(&claim.key)
                        .bind(holder.appointment)
                        .bind(holder.commune)
                        .bind(holder.exclusive)
                        .fetch_optional(&mut *self.tx)
                        .await
                        .map_err(map_err)?;
                    if other.is_none() || looked_again {
                        return Ok(other);
                    }
                    // The delete may have read the claims before the lock was granted
                    // (PostgreSQL, see `delete_stale_claims_locked`): whether the conflicting
                    // claim is stale is looked at again, under the lock, once.
                    looked_again = true;
                }
            }

            async fn release_claims(&mut self, appointment: AppointmentId) -> Result<()> {
                query(sql::RELEASE_CLAIMS)
                    .bind(appointment)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn transfer_claims(&mut self, from: AppointmentId, to: AppointmentId) -> Result<()> {
                query(sql::TRANSFER_CLAIMS)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn enqueue(&mut self, n: &NewNotification, now: DateTime<Utc>) -> Result<bool> {
                let done = bind_new_notification!(query(sql::INSERT_NOTIFICATION), n)
                    .bind(ts(now))
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn cancel_pending(
                &mut self,
                appointment: AppointmentId,
                kinds: &[NotificationKind],
                now: DateTime<Utc>,
            ) -> Result<u64> {
                let mut cancelled = 0;
                for kind in kinds {
                    cancelled += query(sql::CANCEL_PENDING)
                        .bind(appointment)
                        .bind(kind.as_str())
                        .bind(ts(now))
                        .execute(&mut *self.tx)
                        .await
                        .map_err(map_err)?
                        .rows_affected();
                }
                Ok(cancelled)
            }

            async fn lock_seat(
                &mut self,
                planning: PlanningId,
                seat: i32,
                start: DateTime<Utc>,
                end: DateTime<Utc>,
            ) -> Result<bool> {
                let (first, last) = crate::store::seat_buckets(start, end);
                lock_buckets(&mut self.tx, &crate::store::seat_lock_key(planning, seat), first, last).await
            }

            async fn lock_destination(&mut self, destination: &str) -> Result<()> {
                lock_key(&mut self.tx, &crate::store::destination_lock(destination)).await
            }

            async fn count_sent_to(
                &mut self,
                destination: &str,
                kind: NotificationKind,
                recent: DateTime<Utc>,
                day: DateTime<Utc>,
            ) -> Result<(i64, i64)> {
                query_as(sql::COUNT_SENT_TO)
                    .bind(destination)
                    .bind(kind.as_str())
                    .bind(ts(recent))
                    .bind(ts(day.min(recent)))
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err(map_err)
            }

            async fn code_limits(
                &mut self,
                destination: &str,
                recent: DateTime<Utc>,
                day_ago: DateTime<Utc>,
                commune: CommuneId,
                day: chrono::NaiveDate,
            ) -> Result<crate::store::CodeLimits> {
                let (recent, today, sms_used): (i64, i64, i64) = query_as(sql::CODE_LIMITS)
                    .bind(destination)
                    .bind(ts(recent))
                    .bind(ts(day_ago.min(recent)))
                    .bind(commune)
                    .bind(day.format("%Y-%m-%d").to_string())
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(crate::store::CodeLimits {
                    recent,
                    today,
                    sms_used,
                })
            }

            async fn take_sms_budget(
                &mut self,
                commune: CommuneId,
                day: chrono::NaiveDate,
                budget: i32,
            ) -> Result<bool> {
                if budget <= 0 {
                    return Ok(false);
                }
                let day = day.format("%Y-%m-%d").to_string();
                let taken = query(sql::TAKE_SMS_BUDGET)
                    .bind(commune)
                    .bind(&day)
                    .bind(budget)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                Ok(taken == 1)
            }

            async fn put_otp(&mut self, o: &OtpRecord) -> Result<()> {
                query(sql::PUT_OTP)
                    .bind(o.appointment_id)
                    .bind(&o.destination)
                    .bind(&o.code_hash)
                    .bind(ts(o.expires_at))
                    .bind(o.attempts_left)
                    .bind(opt_ts(o.used_at))
                    .bind(ts(o.created_at))
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn use_otp(
                &mut self,
                appointment: AppointmentId,
                code_hash: &str,
                now: DateTime<Utc>,
            ) -> Result<bool> {
                let done = query(sql::USE_OTP)
                    .bind(appointment)
                    .bind(code_hash)
                    .bind(ts(now))
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn otp(&mut self, appointment: AppointmentId) -> Result<Option<OtpRecord>> {
                let row: Option<OtpRow> = query_as(sql::OTP)
                    .bind(appointment)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(OtpRecord::from))
            }

            async fn insert_manage_token(
                &mut self,
                token_hash: &str,
                appointment: AppointmentId,
                now: DateTime<Utc>,
            ) -> Result<()> {
                query(sql::INSERT_TOKEN)
                    .bind(token_hash)
                    .bind(appointment)
                    .bind(ts(now))
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn move_manage_tokens(&mut self, from: AppointmentId, to: AppointmentId) -> Result<()> {
                query(sql::MOVE_TOKENS)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn set_sms_conversation(
                &mut self,
                phone: &str,
                appointment: AppointmentId,
                action: SmsAction,
                expires_at: DateTime<Utc>,
            ) -> Result<()> {
                query(sql::PUT_CONVERSATION)
                    .bind(phone)
                    .bind(appointment)
                    .bind(action.as_str())
                    .bind(ts(expires_at))
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

        }
    };
}
