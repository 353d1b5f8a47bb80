//! Tenant isolation, route by route (SPEC invariant 5: "an agent sees and changes only their own
//! commune"). Signed in to Annecy, every back-office route that names a record is tried with
//! Thonon-les-Bains' real ids, GET and POST with a valid CSRF token and a form that would change
//! something; forms that carry ids in their body are given Thonon's; listing pages are searched
//! for Thonon's citizens. After every request the whole database is read again and compared: a
//! refused request must leave every commune exactly as it was. Every misbehaving route is
//! collected and reported at once, so one run names them all.
//!
//! HTTP routing is the same whatever the database, so these tests run on SQLite only; the
//! store's own conformance suite (`store.rs`) covers both backends.

use crate::agent::{demo_app, signed_in};
use crate::helpers::{TestApp, TestDb};
use crate::pages::{Answer, WebClient};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use guichet::booking::{BookingMode, BookingRequest};
use guichet::domain::slots::SlotFilter;
use guichet::domain::{
    Appointment, Channel, Citizen, CitizenName, Clock, Closure, Commune, CommuneId, Email,
    Location, OpeningRule, PhoneE164, Planning, Service, Status,
};
use guichet::store::{Agent, AgentId, AuditEntry, NewClosure, Notification};

// --- What the database holds ------------------------------------------------------------------

fn far_past() -> DateTime<Utc> {
    "2000-01-01T00:00:00Z".parse().unwrap()
}

fn far_future() -> DateTime<Utc> {
    "2100-01-01T00:00:00Z".parse().unwrap()
}

/// Everything the store holds about one commune.
#[derive(Debug, PartialEq)]
struct CommuneState {
    commune: Commune,
    locations: Vec<Location>,
    services: Vec<Service>,
    plannings: Vec<Planning>,
    rules: Vec<OpeningRule>,
    closures: Vec<Closure>,
    appointments: Vec<Appointment>,
    notifications: Vec<Notification>,
    agents: Vec<Agent>,
    audit: Vec<AuditEntry>,
}

impl CommuneState {
    async fn read(app: &TestApp, commune: Commune) -> CommuneState {
        let store = app.app.engine().store();
        let id = commune.id;
        let appointments = store
            .appointments(id, far_past(), far_future())
            .await
            .unwrap();
        let mut notifications = Vec::new();
        for a in &appointments {
            notifications.extend(store.notifications_of(a.id).await.unwrap());
        }
        CommuneState {
            locations: store.locations(id).await.unwrap(),
            services: store.services(id).await.unwrap(),
            plannings: store.plannings(id).await.unwrap(),
            rules: store.opening_rules(id).await.unwrap(),
            closures: store.closures(id, far_past(), far_future()).await.unwrap(),
            appointments,
            notifications,
            agents: store.agents(Some(id)).await.unwrap(),
            audit: store.audit_log(id, 10_000).await.unwrap(),
            commune,
        }
    }

    /// The names of the parts that differ.
    fn differences(&self, other: &CommuneState) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |same: bool, name| {
            if !same {
                out.push(name);
            }
        };
        check(self.commune == other.commune, "commune");
        check(self.locations == other.locations, "locations");
        check(self.services == other.services, "services");
        check(self.plannings == other.plannings, "plannings");
        check(self.rules == other.rules, "opening rules");
        check(self.closures == other.closures, "closures");
        check(self.appointments == other.appointments, "appointments");
        check(self.notifications == other.notifications, "notifications");
        check(self.agents == other.agents, "agents");
        check(self.audit == other.audit, "audit log");
        out
    }
}

/// The whole database, commune by commune, and the platform's accounts.
#[derive(Debug, PartialEq)]
struct Everything {
    communes: Vec<CommuneState>,
    agents: Vec<Agent>,
}

impl Everything {
    async fn read(app: &TestApp) -> Everything {
        let store = app.app.engine().store();
        let mut communes = Vec::new();
        for c in store.communes().await.unwrap() {
            communes.push(CommuneState::read(app, c).await);
        }
        Everything {
            communes,
            agents: store.agents(None).await.unwrap(),
        }
    }

    /// "thonon-les-bains: appointments, notifications", one line per commune that changed.
    fn differences(&self, after: &Everything) -> Vec<String> {
        let mut out = Vec::new();
        if self.communes.len() != after.communes.len() {
            out.push(format!(
                "communes: {} before, {} after",
                self.communes.len(),
                after.communes.len()
            ));
        }
        for before in &self.communes {
            match after
                .communes
                .iter()
                .find(|c| c.commune.id == before.commune.id)
            {
                Some(now) => {
                    let diff = before.differences(now);
                    if !diff.is_empty() {
                        out.push(format!("{}: {}", before.commune.slug, diff.join(", ")));
                    }
                }
                None => out.push(format!("{}: gone", before.commune.slug)),
            }
        }
        if self.agents != after.agents {
            out.push("accounts".to_owned());
        }
        out
    }
}

// --- Thonon's records -----------------------------------------------------------------------

/// Real records of Thonon-les-Bains, and what must never show up on another commune's pages.
struct Thonon {
    id: CommuneId,
    appointment: Appointment,
    location: Location,
    service: Service,
    planning: Planning,
    rule: OpeningRule,
    closure: Closure,
    admin: AgentId,
    /// A free slot of `service`: (start, location).
    slot: (DateTime<Utc>, i64),
    /// Names, phone numbers, e-mails of its citizens, names of its own places, services and
    /// plannings, and a line of its audit log — none of which Annecy has.
    secrets: Vec<String>,
    /// The local dates of its appointments.
    dates: Vec<NaiveDate>,
}

/// Annecy's own records, for forms that mix them with Thonon's.
struct Annecy {
    appointment: Appointment,
    location: Location,
    service: Service,
    planning: Planning,
    rule: OpeningRule,
    /// A free slot of `service` at one of Annecy's places.
    slot: DateTime<Utc>,
}

/// "06 39 98 00 05" from "+33639980005", as the agents' tables show a mobile.
fn spaced(e164: &str) -> String {
    let national = format!("0{}", e164.trim_start_matches("+33"));
    national
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// How the templates escape text.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// A query-string value.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn first_free_slot(
    app: &TestApp,
    commune: CommuneId,
    service: i64,
) -> guichet::domain::slots::FreeSlot {
    let today = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    app.app
        .engine()
        .free_slots(
            commune,
            service,
            SlotFilter {
                persons: 1,
                location: None,
                from: today,
                to: today + Duration::days(30),
                limit: Some(5),
            },
        )
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("a free slot")
}

async fn records(app: &TestApp) -> (Annecy, Thonon) {
    let store = app.app.engine().store();
    let now = app.clock.now();
    let annecy = store.commune_by_slug("annecy").await.unwrap().unwrap();
    let thonon = store
        .commune_by_slug("thonon-les-bains")
        .await
        .unwrap()
        .unwrap();

    // The demo gives Thonon no closure: one next week.
    store
        .insert_closure(&NewClosure {
            commune_id: thonon.id,
            planning_id: None,
            location_id: None,
            starts_at: "2026-12-08T13:00:00Z".parse().unwrap(),
            ends_at: "2026-12-08T15:00:00Z".parse().unwrap(),
            reason: "Fermeture pour la fête du lac".into(),
        })
        .await
        .unwrap();
    // A line of Thonon's audit log, as one of its agents would have left it.
    let thonon_admin = store
        .agent_by_email("admin@thonon-les-bains.demo")
        .await
        .unwrap()
        .unwrap();
    store
        .insert_audit(&AuditEntry {
            commune_id: Some(thonon.id),
            agent_id: Some(thonon_admin.id),
            agent_email: thonon_admin.email.clone(),
            at: now - Duration::hours(1),
            action: "annulation".into(),
            detail: "Journal-de-Thonon-seulement".into(),
        })
        .await
        .unwrap();

    // One of Thonon's appointments is today, so that recording attendance on it would work.
    let t_titres = store.services(thonon.id).await.unwrap()[0].id;
    let today = first_free_slot(app, thonon.id, t_titres).await;
    assert_eq!(thonon.local_date(today.start), thonon.local_date(now));
    let today = app
        .app
        .engine()
        .book(
            &BookingRequest {
                commune: thonon.id,
                service: t_titres,
                start: today.start,
                location: Some(today.location_id),
                persons: 1,
                citizen: Citizen {
                    name: CitizenName::parse("Gaston Lagaffe").unwrap(),
                    phone: Some(PhoneE164::parse("+33639989999").unwrap()),
                    email: Some(Email::parse("gaston.lagaffe@exemple.fr").unwrap()),
                    ants_application_ids: vec![],
                },
                channel: Channel::Agent,
            },
            BookingMode::Confirmed,
        )
        .await
        .unwrap();
    app.deliver().await;

    let t_appointments = store
        .appointments(thonon.id, far_past(), far_future())
        .await
        .unwrap();
    let a_appointments = store
        .appointments(annecy.id, far_past(), far_future())
        .await
        .unwrap();
    let confirmed = |list: &[Appointment]| {
        list.iter()
            .find(|a| a.status == Status::Confirmed && a.starts_at > now)
            .cloned()
            .expect("a confirmed appointment to come")
    };
    let t_locations = store.locations(thonon.id).await.unwrap();
    let t_services = store.services(thonon.id).await.unwrap();
    let t_plannings = store.plannings(thonon.id).await.unwrap();
    let t_rules = store.opening_rules(thonon.id).await.unwrap();
    let t_closures = store
        .closures(thonon.id, far_past(), far_future())
        .await
        .unwrap();
    let a_locations = store.locations(annecy.id).await.unwrap();
    let a_services = store.services(annecy.id).await.unwrap();
    let a_plannings = store.plannings(annecy.id).await.unwrap();
    let a_rules = store.opening_rules(annecy.id).await.unwrap();

    // What Annecy's pages may show; a "secret" of Thonon is anything not in there.
    let mut annecy_words: Vec<String> = a_appointments
        .iter()
        .map(|a| a.citizen.name.as_str().to_owned())
        .collect();
    annecy_words.extend(a_locations.iter().map(|l| l.name.clone()));
    annecy_words.extend(a_services.iter().map(|s| s.name.clone()));
    annecy_words.extend(a_plannings.iter().map(|p| p.name.clone()));
    let mut secrets = vec!["Journal-de-Thonon-seulement".to_owned()];
    for a in &t_appointments {
        secrets.push(a.citizen.name.as_str().to_owned());
        if let Some(phone) = &a.citizen.phone {
            secrets.push(phone.as_str().to_owned());
            secrets.push(spaced(phone.as_str()));
        }
        if let Some(email) = &a.citizen.email {
            secrets.push(email.as_str().to_owned());
        }
    }
    secrets.extend(t_locations.iter().map(|l| l.name.clone()));
    secrets.extend(t_services.iter().map(|s| s.name.clone()));
    secrets.extend(t_plannings.iter().map(|p| p.name.clone()));
    secrets.retain(|s| !annecy_words.iter().any(|w| w.contains(s.as_str())));
    assert!(
        t_appointments.len() >= 4 && secrets.len() > t_appointments.len(),
        "the demo gives Thonon appointments and names of its own: {secrets:?}"
    );

    let mut dates: Vec<NaiveDate> = t_appointments
        .iter()
        .map(|a| thonon.local_date(a.starts_at))
        .collect();
    dates.sort();
    dates.dedup();

    let t_service = t_services[0].clone();
    let t_slot = first_free_slot(app, thonon.id, t_service.id).await;
    let a_service = a_services[0].clone();
    let a_slot = first_free_slot(app, annecy.id, a_service.id).await;
    let t = Thonon {
        id: thonon.id,
        appointment: store.appointment(today.id).await.unwrap().unwrap(),
        location: t_locations[0].clone(),
        service: t_service,
        planning: t_plannings[0].clone(),
        rule: t_rules[0].clone(),
        closure: t_closures[0].clone(),
        admin: thonon_admin.id,
        slot: (t_slot.start, t_slot.location_id),
        secrets,
        dates,
    };
    let a = Annecy {
        appointment: confirmed(&a_appointments),
        location: a_locations[0].clone(),
        service: a_service,
        planning: a_plannings[0].clone(),
        rule: a_rules[0].clone(),
        slot: a_slot.start,
    };
    (a, t)
}

// --- Probing --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
}

/// Sends requests as one browser, checks each answer's status and that the database did not
/// change, and collects what went wrong.
struct Probe<'a> {
    app: &'a TestApp,
    who: &'static str,
    web: WebClient,
    before: Everything,
    failures: Vec<String>,
}

fn summary(answer: &Answer) -> String {
    let title = answer.title();
    match &answer.location {
        Some(to) => format!("{} → {to}", answer.status),
        None => format!("{} « {} »", answer.status, title.trim()),
    }
}

impl<'a> Probe<'a> {
    async fn new(app: &'a TestApp, who: &'static str, web: WebClient) -> Probe<'a> {
        Probe {
            app,
            who,
            web,
            before: Everything::read(app).await,
            failures: Vec::new(),
        }
    }

    fn csrf(&self) -> String {
        self.web
            .cookie("guichet_csrf")
            .expect("a CSRF cookie")
            .to_owned()
    }

    fn fail(&mut self, what: String) {
        self.failures.push(format!("{}: {what}", self.who));
    }

    /// Sends the request (with this browser's CSRF token for a POST), expects one of
    /// `statuses`, and that nothing in the database changed.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        fields: &[(&str, &str)],
        statuses: &[u16],
    ) -> Answer {
        let answer = match method {
            Method::Get => self.web.get(path).await,
            Method::Post => {
                let csrf = self.csrf();
                let mut with_token: Vec<(&str, &str)> = vec![("csrf", &csrf)];
                with_token.extend_from_slice(fields);
                self.web.post(path, &with_token).await
            }
        };
        if !statuses.contains(&answer.status) {
            self.fail(format!(
                "{method:?} {path} answered {} (expected one of {statuses:?})",
                summary(&answer)
            ));
        }
        let after = Everything::read(self.app).await;
        let changed = self.before.differences(&after);
        if !changed.is_empty() {
            self.fail(format!(
                "{method:?} {path} ({}) changed the database: {}",
                summary(&answer),
                changed.join("; ")
            ));
            self.before = after;
        }
        answer
    }

    /// Expects a redirect to exactly `to`.
    async fn redirected(&mut self, method: Method, path: &str, fields: &[(&str, &str)], to: &str) {
        let answer = self.send(method, path, fields, &[303]).await;
        if answer.status == 303 && answer.location.as_deref() != Some(to) {
            self.fail(format!(
                "{method:?} {path} redirected to {:?}, not {to}",
                answer.location
            ));
        }
    }

    /// Fetches a page the account may see and checks that none of `secrets` is on it.
    async fn clean_page(&mut self, path: &str, secrets: &[String]) {
        let answer = self.send(Method::Get, path, &[], &[200]).await;
        let shown: Vec<&String> = secrets
            .iter()
            .filter(|s| answer.html.contains(s.as_str()) || answer.html.contains(&escaped(s)))
            .collect();
        if !shown.is_empty() {
            self.fail(format!("GET {path} shows Thonon's {shown:?}"));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} tenant leak(s):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

// --- Commune accounts against another commune's records ------------------------------------

/// A form's fields, owned.
type Form = Vec<(&'static str, String)>;

/// Closing a fortnight, confirmed, with replacements offered.
fn closing(scope: &str) -> Form {
    [
        ("portee", scope),
        ("du", "2026-12-01"),
        ("au", "2026-12-14"),
        ("de", "00:00"),
        ("a", "23:59"),
        ("motif", "Fermeture imprévue"),
        ("proposer", "1"),
        ("confirmer", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

fn pairs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `admin`: the account is Annecy's administrator (otherwise a plain agent, whom admin-only
/// pages refuse with 403 before any lookup — which tells nothing about the record either).
async fn commune_account_is_sealed(email: &'static str, admin: bool) {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let (annecy, thonon) = records(&app).await;
    let web = signed_in(&app, email).await;
    let mut p = Probe::new(&app, email, web).await;
    let (get, post) = (Method::Get, Method::Post);
    const NOT_FOUND: &[u16] = &[404];
    // Admin-only pages: 404 for the administrator; 403 (or 404) for an agent.
    let admin_only: &[u16] = if admin { &[404] } else { &[403, 404] };
    // A form whose ids are refused: an error page, never a success.
    const REFUSED: &[u16] = &[400, 403, 404, 422];

    let t = &thonon;
    let ap = t.appointment.id;
    let (loc, svc, plan, rule, closure) = (
        t.location.id,
        t.service.id,
        t.planning.id,
        t.rule.id,
        t.closure.id,
    );
    let (a_loc, a_svc, a_plan) = (
        annecy.location.id.to_string(),
        annecy.service.id.to_string(),
        annecy.planning.id.to_string(),
    );

    // One appointment: its page, attendance, cancellation with a replacement.
    p.send(get, &format!("/agent/rdv/{ap}"), &[], NOT_FOUND)
        .await;
    p.send(
        post,
        &format!("/agent/rdv/{ap}/presence"),
        &[("presence", "absent"), ("retour", "/agent/jour")],
        NOT_FOUND,
    )
    .await;
    p.send(
        post,
        &format!("/agent/rdv/{ap}/annuler"),
        &[("motif", "Agent malade"), ("proposer", "1")],
        NOT_FOUND,
    )
    .await;

    // Configuration records named in the URL.
    p.send(
        get,
        &format!("/agent/configuration/lieux/{loc}"),
        &[],
        admin_only,
    )
    .await;
    p.send(
        post,
        &format!("/agent/configuration/lieux/{loc}"),
        &[
            ("nom", "Lieu repris par Annecy"),
            ("adresse", "1 rue du Pâquier"),
            ("code_postal", "74000"),
            ("ville", "Annecy"),
            ("acces", ""),
            // "actif" absent: the place would be closed, its appointments cancelled.
            ("decision", "annuler"),
            ("motif", "Fermeture"),
        ],
        admin_only,
    )
    .await;
    p.send(
        get,
        &format!("/agent/configuration/demarches/{svc}"),
        &[],
        admin_only,
    )
    .await;
    p.send(
        post,
        &format!("/agent/configuration/demarches/{svc}"),
        &[
            ("nom", "Démarche reprise par Annecy"),
            ("nom_parle", "démarche reprise"),
            ("categorie", "autre"),
            ("duree", "60"),
            ("personnes_max", "1"),
            ("delai_min", "0"),
            ("horizon", "10"),
            ("canal_guichet", "1"),
            ("a_apporter", "Rien"),
            ("decision", "annuler"),
            ("motif", "Fermeture"),
        ],
        admin_only,
    )
    .await;
    p.send(
        get,
        &format!("/agent/configuration/plannings/{plan}"),
        &[],
        admin_only,
    )
    .await;
    p.send(
        post,
        &format!("/agent/configuration/plannings/{plan}"),
        &[
            ("nom", "Planning repris par Annecy"),
            ("postes", "1"),
            ("decision", "annuler"),
            ("motif", "Fermeture"),
        ],
        admin_only,
    )
    .await;
    p.send(
        get,
        &format!("/agent/configuration/horaires/{rule}"),
        &[],
        NOT_FOUND,
    )
    .await;
    // A body valid for Annecy: only the ownership of the rule stops it.
    p.send(
        post,
        &format!("/agent/configuration/horaires/{rule}"),
        &[
            ("planning", &a_plan),
            ("lieu", &a_loc),
            ("jours", "sam"),
            ("debut", "10:00"),
            ("fin", "11:00"),
            ("pas", "30"),
            ("depuis", "2026-12-01"),
            ("jusqu_au", ""),
            ("demarches", &a_svc),
            ("decision", "annuler"),
            ("motif", "Changement"),
        ],
        NOT_FOUND,
    )
    .await;
    // And with Thonon's own ids in the body.
    let (t_plan, t_loc, t_svc) = (plan.to_string(), loc.to_string(), svc.to_string());
    p.send(
        post,
        &format!("/agent/configuration/horaires/{rule}"),
        &[
            ("planning", &t_plan),
            ("lieu", &t_loc),
            ("jours", "sam"),
            ("debut", "10:00"),
            ("fin", "11:00"),
            ("pas", "30"),
            ("depuis", "2026-12-01"),
            ("demarches", &t_svc),
            ("decision", "annuler"),
        ],
        NOT_FOUND,
    )
    .await;
    // Annecy's own rule, moved onto Thonon's planning and place, for Thonon's service.
    p.send(
        post,
        &format!("/agent/configuration/horaires/{}", annecy.rule.id),
        &[
            ("planning", &t_plan),
            ("lieu", &t_loc),
            ("jours", "sam"),
            ("debut", "10:00"),
            ("fin", "11:00"),
            ("pas", "30"),
            ("depuis", "2026-12-01"),
            ("demarches", &t_svc),
            ("decision", "garder"),
        ],
        REFUSED,
    )
    .await;
    p.send(
        post,
        &format!("/agent/configuration/horaires/{rule}/supprimer"),
        &[("decision", "annuler"), ("motif", "Changement")],
        NOT_FOUND,
    )
    .await;
    p.send(
        post,
        &format!("/agent/configuration/fermetures/{closure}/supprimer"),
        &[],
        NOT_FOUND,
    )
    .await;
    p.send(
        post,
        &format!("/agent/configuration/fermetures/{closure}/annuler"),
        &[],
        NOT_FOUND,
    )
    .await;

    // Forms that carry ids in their body.
    let t_slot = format!("{}.{}", t.slot.0.timestamp(), t.slot.1);
    let person = [
        ("personnes", "1"),
        ("nom", "Intrus"),
        ("prenom", "Jean"),
        ("mobile", "06 39 98 77 77"),
    ];
    let mut fields: Vec<(&str, &str)> = vec![("demarche", &t_svc), ("creneau", &t_slot)];
    fields.extend_from_slice(&person);
    p.send(post, "/agent/reserver", &fields, REFUSED).await;
    // Annecy's service at Thonon's place and time …
    let mut fields: Vec<(&str, &str)> = vec![("demarche", &a_svc), ("creneau", &t_slot)];
    fields.extend_from_slice(&person);
    p.send(post, "/agent/reserver", &fields, REFUSED).await;
    // … and at a time Annecy is open, but at Thonon's place.
    let mixed = format!("{}.{}", annecy.slot.timestamp(), loc);
    let mut fields: Vec<(&str, &str)> = vec![("demarche", &a_svc), ("creneau", &mixed)];
    fields.extend_from_slice(&person);
    p.send(post, "/agent/reserver", &fields, REFUSED).await;

    let (by_place, by_planning) = (format!("lieu:{loc}"), format!("planning:{plan}"));
    p.send(post, "/agent/fermer", &pairs(&closing(&by_place)), REFUSED)
        .await;
    p.send(
        post,
        "/agent/fermer",
        &pairs(&closing(&by_planning)),
        REFUSED,
    )
    .await;

    for (planning, place, service) in [
        (&t_plan, &t_loc, &t_svc),
        (&a_plan, &t_loc, &a_svc),
        (&t_plan, &a_loc, &a_svc),
        (&a_plan, &a_loc, &t_svc),
    ] {
        p.send(
            post,
            "/agent/configuration/horaires",
            &[
                ("planning", planning),
                ("lieu", place),
                ("jours", "sam"),
                ("jours", "dim"),
                ("debut", "10:00"),
                ("fin", "11:00"),
                ("pas", "30"),
                ("depuis", "2026-12-01"),
                ("jusqu_au", ""),
                ("demarches", service),
            ],
            REFUSED,
        )
        .await;
    }

    // Pages listing data show none of Thonon's.
    let secrets = &t.secrets;
    for date in &t.dates {
        p.clean_page(&format!("/agent/jour?date={date}"), secrets)
            .await;
        p.clean_page(
            &format!("/agent/jour?date={date}&lieu={loc}&planning={plan}"),
            secrets,
        )
        .await;
    }
    // The search box shows what was typed: that text aside, no result of Thonon's.
    let citizen = &t.appointment.citizen;
    let name = citizen.name.as_str();
    let phone = citizen.phone.as_ref().map(|p| p.as_str().to_owned());
    let mut needles = vec![
        name.to_owned(),
        name.rsplit(' ').next().unwrap_or(name).to_owned(),
        name.to_uppercase(),
    ];
    needles.extend(phone.iter().cloned());
    needles.extend(phone.iter().map(|p| spaced(p)));
    needles.extend(citizen.email.iter().map(|e| e.as_str().to_owned()));
    for needle in &needles {
        let others: Vec<String> = secrets.iter().filter(|s| *s != needle).cloned().collect();
        p.clean_page(&format!("/agent/recherche?q={}", encoded(needle)), &others)
            .await;
    }
    p.clean_page(
        &format!("/agent/rdv/{}?proposition={ap}", annecy.appointment.id),
        secrets,
    )
    .await;
    p.clean_page(
        &format!("/agent/reserver?demarche={svc}&lieu={loc}"),
        secrets,
    )
    .await;
    p.clean_page(
        &format!("/agent/reserver?demarche={a_svc}&lieu={loc}"),
        secrets,
    )
    .await;
    p.clean_page(&format!("/agent/fermer?portee=lieu:{loc}"), secrets)
        .await;
    p.clean_page("/agent/configuration", secrets).await;
    p.clean_page("/agent/configuration/horaires", secrets).await;
    p.clean_page("/agent/statistiques", secrets).await;
    p.clean_page("/agent/statistiques?du=2026-11-01&au=2026-12-31", secrets)
        .await;
    p.clean_page(
        "/agent/statistiques.csv?du=2026-11-01&au=2026-12-31",
        secrets,
    )
    .await;
    if admin {
        p.clean_page("/agent/journal", secrets).await;
    } else {
        p.send(get, "/agent/journal", &[], &[403]).await;
    }

    // The same pages do show Annecy's own: the checks above are not vacuous.
    let own = annecy.appointment.citizen.name.as_str();
    let own_date = annecy
        .appointment
        .starts_at
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    for path in [
        format!("/agent/jour?date={own_date}"),
        format!("/agent/recherche?q={}", encoded(own)),
        format!("/agent/rdv/{}", annecy.appointment.id),
    ] {
        let page = p.send(get, &path, &[], &[200]).await;
        if !page.html.contains(&escaped(own)) {
            p.fail(format!("GET {path} does not show Annecy's own {own}"));
        }
    }

    // Nothing of the platform exists for a commune's account.
    let thonon_id = t.id.to_string();
    let thonon_admin = t.admin;
    p.send(get, "/agent/plateforme", &[], NOT_FOUND).await;
    p.send(get, "/agent/plateforme/comptes", &[], NOT_FOUND)
        .await;
    p.send(
        get,
        &format!("/agent/plateforme/communes/{thonon_id}"),
        &[],
        NOT_FOUND,
    )
    .await;
    p.send(
        post,
        &format!("/agent/plateforme/communes/{thonon_id}"),
        &[
            ("nom", "Thonon repris"),
            ("population", "1"),
            ("budget_sms", "0"),
            ("numeros", ""),
        ],
        NOT_FOUND,
    )
    .await;
    p.send(
        post,
        "/agent/plateforme/communes",
        &[
            ("identifiant", "evian-les-bains"),
            ("insee", "74119"),
            ("nom", "Évian-les-Bains"),
            ("population", "9000"),
            ("budget_sms", "100"),
            ("numeros", "04 65 71 00 09"),
        ],
        NOT_FOUND,
    )
    .await;
    p.send(
        post,
        "/agent/plateforme/comptes",
        &[
            ("email", "intrus@thonon-les-bains.demo"),
            ("nom", "Intrus"),
            ("role", "commune_admin"),
            ("commune", &thonon_id),
            ("mot_de_passe", "un mot de passe assez long"),
        ],
        NOT_FOUND,
    )
    .await;
    p.send(
        post,
        &format!("/agent/plateforme/comptes/{thonon_admin}/actif"),
        &[("actif", "0")],
        NOT_FOUND,
    )
    .await;

    // Stated once more in the store's terms.
    let store = app.app.engine().store();
    let after = store.appointment(ap).await.unwrap().unwrap();
    assert_eq!(
        after, thonon.appointment,
        "Thonon's appointment is untouched"
    );
    assert_eq!(after.status, Status::Confirmed);
    assert!(
        store
            .locations(t.id)
            .await
            .unwrap()
            .contains(&thonon.location)
    );
    assert!(
        store
            .services(t.id)
            .await
            .unwrap()
            .contains(&thonon.service)
    );
    assert!(
        store
            .plannings(t.id)
            .await
            .unwrap()
            .contains(&thonon.planning)
    );
    assert!(
        store
            .opening_rules(t.id)
            .await
            .unwrap()
            .contains(&thonon.rule),
        "Thonon's opening rule is still there, unchanged"
    );
    assert!(
        store
            .closures(t.id, far_past(), far_future())
            .await
            .unwrap()
            .contains(&thonon.closure),
        "Thonon's closure is still there"
    );
    assert!(
        store
            .agent(t.admin)
            .await
            .unwrap()
            .is_some_and(|a| a.active)
    );
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annecy_admin_cannot_reach_thonon_records_sqlite() {
    commune_account_is_sealed("admin@annecy.demo", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annecy_agent_cannot_reach_thonon_records_sqlite() {
    commune_account_is_sealed("agent@annecy.demo", false).await;
}

// --- Every route, for the platform administrator and for nobody ----------------------------

/// One request per route of `agent::routes()` (the sign-in page aside), with Thonon's ids and
/// a form that would change something.
fn every_route(t: &Thonon) -> Vec<(Method, String, Form)> {
    let (get, post) = (Method::Get, Method::Post);
    let ap = t.appointment.id;
    let (loc, svc, plan, rule, closure, commune, admin) = (
        t.location.id,
        t.service.id,
        t.planning.id,
        t.rule.id,
        t.closure.id,
        t.id,
        t.admin,
    );
    let f = |pairs: &[(&'static str, &str)]| -> Form {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    };
    let slot = format!("{}.{}", t.slot.0.timestamp(), t.slot.1);
    let location = f(&[
        ("nom", "Lieu repris"),
        ("adresse", "1 rue du Lac"),
        ("code_postal", "74200"),
        ("ville", "Thonon-les-Bains"),
        ("decision", "annuler"),
    ]);
    let service = f(&[
        ("nom", "Démarche reprise"),
        ("categorie", "autre"),
        ("duree", "60"),
        ("personnes_max", "1"),
        ("delai_min", "0"),
        ("horizon", "10"),
        ("decision", "annuler"),
    ]);
    let planning = f(&[
        ("nom", "Planning repris"),
        ("postes", "1"),
        ("decision", "annuler"),
    ]);
    let opening = f(&[
        ("planning", &plan.to_string()),
        ("lieu", &loc.to_string()),
        ("jours", "sam"),
        ("debut", "10:00"),
        ("fin", "11:00"),
        ("pas", "30"),
        ("depuis", "2026-12-01"),
        ("demarches", &svc.to_string()),
        ("decision", "annuler"),
    ]);
    let platform_commune = f(&[
        ("nom", "Thonon repris"),
        ("population", "1"),
        ("budget_sms", "0"),
        ("numeros", ""),
    ]);
    vec![
        (get, "/agent".into(), vec![]),
        (post, "/agent/deconnexion".into(), vec![]),
        (get, "/agent/jour?date=2026-12-01".into(), vec![]),
        (get, "/agent/recherche?q=Dupont".into(), vec![]),
        (get, format!("/agent/rdv/{ap}"), vec![]),
        (
            post,
            format!("/agent/rdv/{ap}/presence"),
            f(&[("presence", "absent")]),
        ),
        (
            post,
            format!("/agent/rdv/{ap}/annuler"),
            f(&[("motif", "Agent malade"), ("proposer", "1")]),
        ),
        (get, format!("/agent/reserver?demarche={svc}"), vec![]),
        (
            post,
            "/agent/reserver".into(),
            f(&[
                ("demarche", &svc.to_string()),
                ("creneau", &slot),
                ("personnes", "1"),
                ("nom", "Intrus"),
                ("mobile", "06 39 98 77 77"),
            ]),
        ),
        (get, "/agent/fermer".into(), vec![]),
        (
            post,
            "/agent/fermer".into(),
            closing(&format!("lieu:{loc}")),
        ),
        (get, "/agent/configuration".into(), vec![]),
        (
            post,
            "/agent/configuration/commune".into(),
            f(&[
                ("standard", "04 65 71 00 66"),
                ("horaires_standard", "lun 09:00-12:00"),
                ("rappel", "24"),
                ("silence_debut", "20:00"),
                ("silence_fin", "08:00"),
                ("expediteur", "Pirate"),
            ]),
        ),
        (
            post,
            "/agent/configuration/voix".into(),
            f(&[("voix", "alice"), ("langue", "fr-FR"), ("parcours", "")]),
        ),
        (post, "/agent/configuration/lieux".into(), location.clone()),
        (get, format!("/agent/configuration/lieux/{loc}"), vec![]),
        (post, format!("/agent/configuration/lieux/{loc}"), location),
        (
            post,
            "/agent/configuration/demarches".into(),
            service.clone(),
        ),
        (get, format!("/agent/configuration/demarches/{svc}"), vec![]),
        (
            post,
            format!("/agent/configuration/demarches/{svc}"),
            service,
        ),
        (
            post,
            "/agent/configuration/plannings".into(),
            planning.clone(),
        ),
        (
            get,
            format!("/agent/configuration/plannings/{plan}"),
            vec![],
        ),
        (
            post,
            format!("/agent/configuration/plannings/{plan}"),
            planning,
        ),
        (get, "/agent/configuration/horaires".into(), vec![]),
        (
            post,
            "/agent/configuration/horaires".into(),
            opening.clone(),
        ),
        (get, format!("/agent/configuration/horaires/{rule}"), vec![]),
        (
            post,
            format!("/agent/configuration/horaires/{rule}"),
            opening,
        ),
        (
            post,
            format!("/agent/configuration/horaires/{rule}/supprimer"),
            f(&[("decision", "annuler")]),
        ),
        (
            post,
            format!("/agent/configuration/fermetures/{closure}/supprimer"),
            vec![],
        ),
        (
            post,
            format!("/agent/configuration/fermetures/{closure}/annuler"),
            vec![],
        ),
        (get, "/agent/statistiques".into(), vec![]),
        (get, "/agent/statistiques.csv".into(), vec![]),
        (get, "/agent/journal".into(), vec![]),
        (get, "/agent/plateforme".into(), vec![]),
        (
            post,
            "/agent/plateforme/communes".into(),
            f(&[
                ("identifiant", "evian-les-bains"),
                ("insee", "74119"),
                ("nom", "Évian-les-Bains"),
                ("population", "9000"),
                ("budget_sms", "100"),
                ("numeros", "04 65 71 00 09"),
            ]),
        ),
        (get, format!("/agent/plateforme/communes/{commune}"), vec![]),
        (
            post,
            format!("/agent/plateforme/communes/{commune}"),
            platform_commune,
        ),
        (get, "/agent/plateforme/comptes".into(), vec![]),
        (
            post,
            "/agent/plateforme/comptes".into(),
            f(&[
                ("email", "intrus@thonon-les-bains.demo"),
                ("nom", "Intrus"),
                ("role", "commune_admin"),
                ("commune", &commune.to_string()),
                ("mot_de_passe", "un mot de passe assez long"),
            ]),
        ),
        (
            post,
            format!("/agent/plateforme/comptes/{admin}/actif"),
            f(&[("actif", "0")]),
        ),
    ]
}

fn is_platform_route(path: &str) -> bool {
    path.starts_with("/agent/plateforme")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_admin_is_sent_to_platform_pages_sqlite() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let (_annecy, thonon) = records(&app).await;
    let web = signed_in(&app, "plateforme@guichet.demo").await;
    let mut p = Probe::new(&app, "plateforme@guichet.demo", web).await;
    for (method, path, fields) in every_route(&thonon) {
        // The platform's own pages are its to change; signing out is tried last.
        if is_platform_route(&path) || path == "/agent/deconnexion" {
            continue;
        }
        p.redirected(method, &path, &pairs(&fields), "/agent/plateforme")
            .await;
    }
    // Still signed in: the redirects were not a sign-out in disguise.
    p.send(Method::Get, "/agent/plateforme", &[], &[200]).await;
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_requests_are_sent_to_sign_in_sqlite() {
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let (_annecy, thonon) = records(&app).await;
    let routes = every_route(&thonon);
    for (who, session) in [
        ("signed out", None),
        ("made-up session", Some("dGhpcyBpcyBub3QgYSBzZXNzaW9u")),
    ] {
        let mut web = WebClient::new(&app);
        // A browser that has been to the sign-in page holds a valid CSRF token.
        assert_eq!(web.get("/agent/connexion").await.status, 200);
        if let Some(token) = session {
            web.set_cookie("guichet_agent", token);
        }
        let mut p = Probe::new(&app, who, web).await;
        for (method, path, fields) in &routes {
            let answer = p
                .send(*method, path, &pairs(fields), &[303, 401, 403])
                .await;
            let to = answer.location.as_deref().unwrap_or_default();
            if answer.status == 303 && !to.starts_with("/agent/connexion") {
                p.fail(format!("{method:?} {path} redirected to {to}"));
            }
            if matches!(method, Method::Get) && answer.status != 303 {
                p.fail(format!(
                    "GET {path} did not send to the sign-in page ({})",
                    summary(&answer)
                ));
            }
        }
        p.finish();
    }
}
