//! Demo data (`guichet demo`): three Haute-Savoie communes with their numbers, services,
//! plannings and realistic opening hours from a month ago on, a few closures, and appointments
//! already booked over the coming two weeks. Numbers are from the ranges reserved for fiction
//! (04 65 71 xx xx for town halls, 06 39 98 xx xx for citizens). Seeding happens once, on an
//! empty database.

use crate::App;
use crate::booking::{BookingMode, BookingRequest, Engine};
use crate::domain::slots::SlotFilter;
use crate::domain::{
    AntsApplicationId, Category, Channel, Channels, Citizen, CitizenName, CommuneId, Email,
    LocationId, MinuteOfDay, PhoneE164, PlanningId, Role, ServiceId, Weekdays, WeeklyHours,
    WeeklyRange,
};
use crate::store::{NewClosure, NewCommune, NewLocation, NewOpeningRule, NewPlanning, NewService};
use anyhow::Context;
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Weekday};
use chrono_tz::Europe::Paris;
use std::fmt::Write;

pub const DEMO_DATABASE_URL: &str = "sqlite://guichet-demo.db";

use Weekday::{Fri, Mon, Sat, Thu, Tue, Wed};

const MON_FRI: &[Weekday] = &[Mon, Tue, Wed, Thu, Fri];

fn hm(h: u16, m: u16) -> MinuteOfDay {
    MinuteOfDay::hm(h, m)
}

fn office_hours() -> WeeklyHours {
    let days = Weekdays::of(MON_FRI);
    WeeklyHours(vec![
        WeeklyRange {
            weekdays: days,
            start: hm(8, 30),
            end: hm(12, 0),
        },
        WeeklyRange {
            weekdays: days,
            start: hm(13, 30),
            end: hm(17, 0),
        },
    ])
}

struct ServiceSpec {
    name: &'static str,
    spoken: &'static str,
    category: Category,
    minutes: i32,
    max_persons: i32,
    notice_minutes: i32,
    horizon_days: i32,
    bring: &'static str,
}

const BRING_TITRES: &str = "Le numéro de pré-demande ANTS de chaque personne, une photo d'identité \
    de moins de 6 mois, un justificatif de domicile de moins d'un an et l'ancien titre s'il existe. \
    Chaque personne, enfant compris, doit être présente.";

fn titres() -> ServiceSpec {
    ServiceSpec {
        name: "Carte d'identité et passeport",
        spoken: "carte d'identité ou passeport",
        category: Category::Titres,
        minutes: 20,
        max_persons: 4,
        notice_minutes: 120,
        horizon_days: 60,
        bring: BRING_TITRES,
    }
}

/// A meeting with the mayor or an elected official: two days' notice, half an hour.
fn meeting(name: &'static str, spoken: &'static str) -> ServiceSpec {
    ServiceSpec {
        name,
        spoken,
        category: Category::Elus,
        minutes: 30,
        max_persons: 2,
        notice_minutes: 2 * 24 * 60,
        horizon_days: 60,
        bring: "Un courrier résumant votre demande, si vous le souhaitez.",
    }
}

/// One rule: planning, location, weekdays, opening, closing, step, services (indexes into the
/// commune's services).
struct RuleSpec(
    usize,
    usize,
    &'static [Weekday],
    MinuteOfDay,
    MinuteOfDay,
    i32,
    &'static [usize],
);

struct CommuneSpec {
    slug: &'static str,
    name: &'static str,
    insee: &'static str,
    population: i64,
    number: &'static str,
    switchboard: &'static str,
    sms_sender: &'static str,
    locations: Vec<(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    )>,
    services: Vec<ServiceSpec>,
    plannings: Vec<(&'static str, i32)>,
    rules: Vec<RuleSpec>,
}

fn communes() -> Vec<CommuneSpec> {
    vec![
        CommuneSpec {
            slug: "annecy",
            name: "Annecy",
            insee: "74010",
            population: 131_000,
            number: "+33465710001",
            switchboard: "+33465710010",
            sms_sender: "Annecy",
            locations: vec![
                (
                    "Hôtel de ville d'Annecy",
                    "Esplanade de l'Hôtel de Ville",
                    "74000",
                    "Annecy",
                    "Accueil au rez-de-chaussée, accès de plain-pied. Présentez-vous 5 minutes avant l'heure.",
                ),
                (
                    "Mairie déléguée de Seynod",
                    "Place de l'Hôtel de Ville, Seynod",
                    "74600",
                    "Annecy",
                    "Parking gratuit devant la mairie. Ascenseur à gauche de l'entrée.",
                ),
            ],
            services: vec![
                titres(),
                ServiceSpec {
                    name: "Inscription scolaire",
                    spoken: "inscription scolaire",
                    category: Category::Scolaire,
                    minutes: 30,
                    max_persons: 1,
                    notice_minutes: 24 * 60,
                    horizon_days: 45,
                    bring: "Le livret de famille, un justificatif de domicile de moins de 3 mois et le carnet de santé de l'enfant.",
                },
                meeting("Rencontre avec le maire", "rendez-vous avec le maire"),
                ServiceSpec {
                    name: "Dossier de mariage ou de PACS",
                    spoken: "dossier de mariage ou de pacs",
                    category: Category::EtatCivil,
                    minutes: 45,
                    max_persons: 2,
                    notice_minutes: 24 * 60,
                    horizon_days: 90,
                    bring: "Les pièces d'identité des deux partenaires, un justificatif de domicile et les actes de naissance de moins de 3 mois.",
                },
            ],
            plannings: vec![
                ("Station biométrique 1 (Hôtel de ville)", 1),
                ("Station biométrique 2 (Hôtel de ville)", 1),
                ("Station biométrique (Seynod)", 1),
                ("Service éducation", 2),
                ("Agenda du maire", 1),
                ("État civil", 1),
            ],
            rules: vec![
                RuleSpec(0, 0, MON_FRI, hm(8, 30), hm(12, 0), 20, &[0]),
                RuleSpec(0, 0, MON_FRI, hm(13, 30), hm(17, 0), 20, &[0]),
                RuleSpec(0, 0, &[Sat], hm(9, 0), hm(12, 0), 20, &[0]),
                RuleSpec(1, 0, &[Tue, Thu], hm(8, 30), hm(12, 0), 20, &[0]),
                RuleSpec(1, 0, &[Tue, Thu], hm(13, 30), hm(18, 30), 20, &[0]),
                RuleSpec(2, 1, &[Mon, Wed, Fri], hm(9, 0), hm(12, 0), 20, &[0]),
                RuleSpec(2, 1, &[Mon, Wed, Fri], hm(14, 0), hm(16, 40), 20, &[0]),
                RuleSpec(3, 0, MON_FRI, hm(9, 0), hm(12, 0), 30, &[1]),
                RuleSpec(3, 1, &[Wed], hm(14, 0), hm(17, 0), 30, &[1]),
                RuleSpec(4, 0, &[Fri], hm(14, 0), hm(17, 0), 30, &[2]),
                RuleSpec(5, 0, &[Tue, Thu], hm(9, 0), hm(12, 0), 45, &[3]),
            ],
        },
        CommuneSpec {
            slug: "thonon-les-bains",
            name: "Thonon-les-Bains",
            insee: "74281",
            population: 36_000,
            number: "+33465710002",
            switchboard: "+33465710020",
            sms_sender: "Thonon",
            locations: vec![(
                "Hôtel de ville de Thonon-les-Bains",
                "Place de l'Hôtel de Ville",
                "74200",
                "Thonon-les-Bains",
                "Service population au 1er étage, ascenseur dans le hall.",
            )],
            services: vec![
                titres(),
                ServiceSpec {
                    name: "Inscription scolaire et périscolaire",
                    spoken: "inscription scolaire",
                    category: Category::Scolaire,
                    minutes: 30,
                    max_persons: 1,
                    notice_minutes: 24 * 60,
                    horizon_days: 45,
                    bring: "Le livret de famille, un justificatif de domicile récent et, en cas de séparation, le jugement fixant la garde.",
                },
                ServiceSpec {
                    name: "Recensement citoyen",
                    spoken: "recensement citoyen",
                    category: Category::Autre,
                    minutes: 15,
                    max_persons: 1,
                    notice_minutes: 60,
                    horizon_days: 30,
                    bring: "La carte d'identité du jeune de 16 ans et le livret de famille.",
                },
                meeting("Rencontre avec un élu", "rendez-vous avec un élu"),
            ],
            plannings: vec![
                ("Stations biométriques", 2),
                ("Accueil population", 1),
                ("Agenda des élus", 1),
            ],
            rules: vec![
                RuleSpec(0, 0, MON_FRI, hm(8, 30), hm(11, 50), 20, &[0]),
                RuleSpec(0, 0, MON_FRI, hm(13, 30), hm(16, 50), 20, &[0]),
                RuleSpec(0, 0, &[Sat], hm(9, 0), hm(11, 40), 20, &[0]),
                RuleSpec(1, 0, MON_FRI, hm(9, 0), hm(12, 0), 15, &[1, 2]),
                RuleSpec(1, 0, &[Mon, Wed], hm(14, 0), hm(17, 0), 15, &[1, 2]),
                RuleSpec(2, 0, &[Wed], hm(9, 0), hm(12, 0), 30, &[3]),
            ],
        },
        CommuneSpec {
            slug: "sallanches",
            name: "Sallanches",
            insee: "74256",
            population: 16_000,
            number: "+33465710003",
            switchboard: "+33465710030",
            sms_sender: "Sallanches",
            locations: vec![(
                "Mairie de Sallanches",
                "30 quai de l'Hôtel de Ville",
                "74700",
                "Sallanches",
                "Entrée côté quai, guichet de l'état civil.",
            )],
            services: vec![
                titres(),
                ServiceSpec {
                    name: "Inscription scolaire",
                    spoken: "inscription scolaire",
                    category: Category::Scolaire,
                    minutes: 20,
                    max_persons: 1,
                    notice_minutes: 24 * 60,
                    horizon_days: 45,
                    bring: "Le livret de famille, un justificatif de domicile et le carnet de santé de l'enfant.",
                },
                ServiceSpec {
                    name: "Légalisation de signature",
                    spoken: "légalisation de signature",
                    category: Category::Autre,
                    minutes: 10,
                    max_persons: 1,
                    notice_minutes: 60,
                    horizon_days: 30,
                    bring: "Le document à signer, non signé, et votre pièce d'identité.",
                },
                meeting("Rencontre avec le maire", "rendez-vous avec le maire"),
            ],
            plannings: vec![
                ("Station biométrique", 1),
                ("Accueil état civil", 1),
                ("Agenda du maire", 1),
            ],
            rules: vec![
                RuleSpec(0, 0, MON_FRI, hm(9, 0), hm(12, 0), 20, &[0]),
                RuleSpec(0, 0, &[Mon, Tue, Thu, Fri], hm(14, 0), hm(17, 0), 20, &[0]),
                RuleSpec(1, 0, MON_FRI, hm(9, 0), hm(12, 0), 10, &[1, 2]),
                RuleSpec(2, 0, &[Mon], hm(16, 0), hm(18, 0), 30, &[3]),
            ],
        },
    ]
}

const FIRST_NAMES: &[&str] = &[
    "Marie", "Jean", "Fatima", "Lucas", "Chantal", "Kevin", "Sophie", "Robert", "Amina", "Pierre",
    "Nathalie", "Thomas",
];
const LAST_NAMES: &[&str] = &[
    "Dupont",
    "Martin",
    "Benali",
    "Bernard",
    "Morel",
    "Girard",
    "Lambert",
    "Fontaine",
    "Diallo",
    "Rousseau",
    "Blanc",
    "Chevalier",
    "Perrin",
];

/// Demo citizen `n`: a name, a mobile number from the fiction range (06 39 98 00 01 …) and an
/// e-mail address, all distinct per `n`.
fn demo_citizen(n: usize) -> (String, String, String) {
    let first = FIRST_NAMES[n % FIRST_NAMES.len()];
    let last = LAST_NAMES[(n * 5) % LAST_NAMES.len()];
    (
        format!("{first} {last}"),
        format!("+3363998{:04}", n + 1),
        format!(
            "{}.{}{}@exemple.fr",
            first.to_lowercase(),
            last.to_lowercase(),
            n + 1
        ),
    )
}

struct Seeded {
    commune: CommuneId,
    services: Vec<ServiceId>,
    plannings: Vec<PlanningId>,
    locations: Vec<LocationId>,
}

/// Seeds the demo communes if the database has none. Returns whether it wrote anything.
pub async fn seed(engine: &Engine) -> anyhow::Result<bool> {
    let store = engine.store();
    if !store.communes().await?.is_empty() {
        return Ok(false);
    }
    let now = engine.now();
    let today = now.with_timezone(&Paris).date_naive();
    let mut seeded = Vec::new();
    for spec in communes() {
        let commune = store
            .insert_commune(&NewCommune {
                slug: spec.slug.into(),
                name: spec.name.into(),
                insee_code: spec.insee.into(),
                timezone: Paris,
                population: spec.population,
                phone_numbers: vec![spec.number.into()],
                switchboard_number: Some(spec.switchboard.into()),
                switchboard_hours: office_hours(),
                reminder_delay_hours: 48,
                quiet_start: hm(20, 0),
                quiet_end: hm(8, 0),
                sms_sender: spec.sms_sender.into(),
                allow_multiple_per_category: false,
                sms_daily_budget: 300,
                allow_foreign_mobiles: false,
            })
            .await
            .with_context(|| format!("commune {}", spec.slug))?;
        let mut locations = Vec::new();
        for (name, address, postcode, city, notes) in &spec.locations {
            locations.push(
                store
                    .insert_location(&NewLocation {
                        commune_id: commune,
                        name: (*name).into(),
                        address: (*address).into(),
                        postcode: (*postcode).into(),
                        city: (*city).into(),
                        access_notes: (*notes).into(),
                    })
                    .await?,
            );
        }
        let mut services = Vec::new();
        for s in &spec.services {
            services.push(
                store
                    .insert_service(&NewService {
                        commune_id: commune,
                        name: s.name.into(),
                        spoken_name: s.spoken.into(),
                        category: s.category,
                        duration_minutes: s.minutes,
                        max_persons: s.max_persons,
                        min_notice_minutes: s.notice_minutes,
                        horizon_days: s.horizon_days,
                        channels: Channels::ALL,
                        what_to_bring: s.bring.into(),
                    })
                    .await?,
            );
        }
        let mut plannings = Vec::new();
        for (name, capacity) in &spec.plannings {
            plannings.push(
                store
                    .insert_planning(&NewPlanning {
                        commune_id: commune,
                        name: (*name).into(),
                        capacity: *capacity,
                    })
                    .await?,
            );
        }
        for RuleSpec(planning, location, days, start, end, step, rule_services) in &spec.rules {
            store
                .insert_opening_rule(&NewOpeningRule {
                    planning_id: plannings[*planning],
                    location_id: locations[*location],
                    weekdays: Weekdays::of(days),
                    start: *start,
                    end: *end,
                    step_minutes: *step,
                    valid_from: today - Duration::days(30),
                    valid_until: None,
                    service_ids: rule_services.iter().map(|i| services[*i]).collect(),
                })
                .await?;
        }
        seeded.push(Seeded {
            commune,
            services,
            plannings,
            locations,
        });
    }
    seed_closures(engine, &seeded, today).await?;
    seed_bookings(engine, &seeded, today).await?;
    store.shared_secret(DEMO_MARK, "oui").await?;
    Ok(true)
}

/// Set in the settings of a database that `guichet demo` seeded itself.
const DEMO_MARK: &str = "demo_database";

/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "guichet-demo";

/// The demo accounts of SPEC.md: an agent and a commune administrator for each demo commune,
/// and the platform administrator. Created when missing, only by `guichet demo` (and tests).
pub async fn seed_accounts(store: &dyn crate::store::Store) -> anyhow::Result<Vec<(String, Role)>> {
    // Accounts with a published password belong only in a database the demo created: never in
    // one that held real communes when `guichet demo` was pointed at it.
    if store.setting(DEMO_MARK).await?.is_none() {
        tracing::warn!("not a demo database: no demo accounts created");
        return Ok(Vec::new());
    }
    let mut accounts = vec![(
        "plateforme@guichet.demo".to_owned(),
        "Administration de la plateforme".to_owned(),
        Role::PlatformAdmin,
        None,
    )];
    for commune in store.communes().await? {
        if !communes().iter().any(|c| c.slug == commune.slug) {
            continue;
        }
        accounts.push((
            format!("agent@{}.demo", commune.slug),
            format!("Agent d'accueil, {}", commune.name),
            Role::Agent,
            Some(commune.id),
        ));
        accounts.push((
            format!("admin@{}.demo", commune.slug),
            format!("Administrateur, {}", commune.name),
            Role::CommuneAdmin,
            Some(commune.id),
        ));
    }
    let now = chrono::Utc::now();
    let mut listed = Vec::new();
    for (email, name, role, commune_id) in accounts {
        if store.agent_by_email(&email).await?.is_none() {
            let password_hash = crate::accounts::hash_password(DEMO_PASSWORD)?;
            store
                .insert_agent(
                    &crate::store::NewAgent {
                        email: email.clone(),
                        name,
                        password_hash,
                        role,
                        commune_id,
                    },
                    now,
                )
                .await
                .with_context(|| format!("demo account {email}"))?;
        }
        listed.push((email, role));
    }
    Ok(listed)
}

fn next(from: NaiveDate, day: Weekday) -> NaiveDate {
    let ahead = (7 + day.num_days_from_monday() - from.weekday().num_days_from_monday()) % 7;
    from + Duration::days(i64::from(if ahead == 0 { 7 } else { ahead }))
}

fn paris(date: NaiveDate, h: u32, m: u32) -> chrono::DateTime<chrono::Utc> {
    let local = date.and_hms_opt(h, m, 0).unwrap_or_default();
    // Demo hours are never in a daylight-saving gap; UTC is a harmless fallback if one were.
    Paris
        .from_local_datetime(&local)
        .earliest()
        .map_or_else(|| local.and_utc(), |t| t.with_timezone(&chrono::Utc))
}

async fn seed_closures(engine: &Engine, seeded: &[Seeded], today: NaiveDate) -> anyhow::Result<()> {
    let store = engine.store();
    let (annecy, sallanches) = (&seeded[0], &seeded[2]);
    // The second passport station of Annecy is serviced next Thursday afternoon.
    let thursday = next(today, Thu);
    store
        .insert_closure(&NewClosure {
            commune_id: annecy.commune,
            planning_id: Some(annecy.plannings[1]),
            location_id: None,
            starts_at: paris(thursday, 13, 0),
            ends_at: paris(thursday, 19, 0),
            reason: "Maintenance de la station biométrique".into(),
        })
        .await?;
    // Seynod's annex closes for a staff training the Wednesday after next.
    let wednesday = next(today, Wed) + Duration::days(7);
    store
        .insert_closure(&NewClosure {
            commune_id: annecy.commune,
            planning_id: None,
            location_id: Some(annecy.locations[1]),
            starts_at: paris(wednesday, 0, 0),
            ends_at: paris(wednesday + Duration::days(1), 0, 0),
            reason: "Formation du personnel".into(),
        })
        .await?;
    // Sallanches town hall closes on Friday afternoon in two weeks.
    let friday = next(today, Fri) + Duration::days(7);
    store
        .insert_closure(&NewClosure {
            commune_id: sallanches.commune,
            planning_id: None,
            location_id: None,
            starts_at: paris(friday, 12, 0),
            ends_at: paris(friday, 18, 0),
            reason: "Fermeture exceptionnelle de la mairie".into(),
        })
        .await?;
    Ok(())
}

/// Books a spread of appointments through the engine, as the three channels would.
async fn seed_bookings(engine: &Engine, seeded: &[Seeded], today: NaiveDate) -> anyhow::Result<()> {
    let channels = [Channel::Web, Channel::Phone, Channel::Agent];
    let mut citizen = 0;
    for commune in seeded {
        for (i, service) in commune.services.iter().enumerate() {
            let slots = engine
                .free_slots(
                    commune.commune,
                    *service,
                    SlotFilter {
                        persons: 1,
                        location: None,
                        from: today + Duration::days(1),
                        to: today + Duration::days(14),
                        limit: None,
                    },
                )
                .await?;
            // A few appointments per service, spread over the fortnight.
            let wanted = if i == 0 { 4 } else { 1 };
            let stride = (slots.len() / (wanted + 1)).max(1);
            for slot in slots.iter().skip(stride / 2).step_by(stride).take(wanted) {
                let (name, phone, email) = demo_citizen(citizen);
                let channel = channels[citizen % channels.len()];
                citizen += 1;
                let ants = if i == 0 {
                    vec![AntsApplicationId::parse(&format!("DEMO{:06}", citizen))?]
                } else {
                    Vec::new()
                };
                let request = BookingRequest {
                    commune: commune.commune,
                    service: *service,
                    start: slot.start,
                    location: Some(slot.location_id),
                    persons: 1,
                    citizen: Citizen {
                        name: CitizenName::parse(&name)?,
                        phone: Some(PhoneE164::parse(&phone)?),
                        email: (channel == Channel::Web)
                            .then(|| Email::parse(&email))
                            .transpose()?,
                        ants_application_ids: ants,
                    },
                    channel,
                };
                engine
                    .book(&request, BookingMode::Confirmed)
                    .await
                    .with_context(|| format!("demo booking for {name}"))?;
            }
        }
    }
    Ok(())
}

/// What `guichet demo` prints: where to click, what to call.
pub async fn banner(app: &App, seeded: bool) -> anyhow::Result<String> {
    let state = app.state();
    let base = &state.config.public_url;
    let mut out = String::new();
    writeln!(out, "\nguichet — démonstration")?;
    writeln!(
        out,
        "  Base de données : {}{}",
        crate::config::mask_url_password(&state.config.database_url),
        if seeded {
            " (communes de démonstration créées)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "  Prendre rendez-vous comme un usager : {base}/   (annecy : {base}/annecy)"
    )?;
    writeln!(
        out,
        "  Appeler une mairie : guichet call --to +33465710001   (ou dans le navigateur : {base}/dev/phone)"
    )?;
    writeln!(
        out,
        "  Santé : {base}/healthz   {base}/readyz   {base}/metrics"
    )?;
    writeln!(
        out,
        "  API :   {base}/api/v1/communes   (description : {base}/api/v1/openapi.json)"
    )?;
    for commune in state.store().communes().await? {
        let services = state.store().services(commune.id).await?;
        writeln!(
            out,
            "\n  {} — {base}/{} — numéro d'appel {}",
            commune.name,
            commune.slug,
            commune.phone_numbers.join(", ")
        )?;
        for service in services {
            writeln!(
                out,
                "    {:<40} {base}/api/v1/communes/{}/slots?service={}",
                service.name, commune.slug, service.id
            )?;
        }
    }
    writeln!(
        out,
        "\n  Espace des agents : {base}/agent   (mot de passe de tous les comptes : {DEMO_PASSWORD})"
    )?;
    for agent in state.store().agents(None).await? {
        writeln!(out, "    {:<32} {}", agent.email, agent.role.label())?;
    }
    writeln!(
        out,
        "\n  SMS et e-mails : rien ne part, tout s'affiche sur {base}/dev/outbox (codes compris)."
    )?;
    writeln!(
        out,
        "  Réserver : POST {base}/api/v1/communes/annecy/appointments (voir la description de l'API)."
    )?;
    writeln!(out, "  Arrêt : Ctrl-C.")?;
    Ok(out)
}
