//! The back-office in a real headless Chromium: an agent signs in, books for a walk-in,
//! cancels with a replacement, and the citizen accepts it through the link of the SMS; then
//! axe-core checks every agent page (no serious or critical violation allowed).

use crate::agent::{PASSWORD, demo_app};
use crate::chrome::{self, Tab, serious};
use crate::helpers::{TestApp, TestDb};
use guichet::domain::{Category, Status};

const MOBILE: &str = "+33639985001";

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.address)
}

async fn sign_in(app: &TestApp, tab: &Tab, email: &str) {
    tab.goto(&url(app, "/agent")).await;
    assert!(
        tab.title().await.starts_with("Connexion"),
        "{}",
        tab.url().await
    );
    tab.fill("#email", email).await;
    tab.fill("#password", PASSWORD).await;
    tab.click_and_wait("main form button[type=submit]").await;
}

async fn sign_out(tab: &Tab) {
    tab.click_and_wait("form.signout button").await;
    assert!(tab.text().await.contains("Vous êtes déconnecté."));
}

async fn titres(app: &TestApp) -> String {
    let store = app.app.engine().store();
    let annecy = store.commune_by_slug("annecy").await.unwrap().unwrap();
    store
        .services(annecy.id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.category == Category::Titres)
        .unwrap()
        .id
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_books_a_walk_in_cancels_with_a_replacement_and_the_citizen_accepts() {
    let Some(browser) = chrome::browser().await else {
        return;
    };
    let db = TestDb::sqlite().await;
    let (app, twilio) = demo_app(&db).await;
    let tab = browser.tab(1280, 900, true).await;
    sign_in(&app, &tab, "agent@annecy.demo").await;
    assert!(
        tab.title().await.starts_with("Journée"),
        "{}",
        tab.title().await
    );

    // The walk-in: service, persons, the first free slot, a name and a mobile.
    tab.click_and_wait("a[href='/agent/reserver']").await;
    tab.select("#demarche", &titres(&app).await).await;
    tab.fill("#personnes", "1").await;
    tab.click_and_wait("form.filters button").await;
    assert!(
        tab.exists("input[name=creneau]:checked").await,
        "the first slot is chosen"
    );
    tab.fill("#nom", "Bernard").await;
    tab.fill("#mobile", "06 39 98 50 01").await;
    tab.click_and_wait("form[method=post][action='/agent/reserver'] button[type=submit]")
        .await;
    let text = tab.text().await;
    assert!(text.contains("Rendez-vous réservé."), "{text}");
    assert!(text.contains("Bernard"));
    app.deliver().await;
    assert!(twilio.sent_to(MOBILE)[0].body.contains("RDV confirmé"));

    // The station breaks: cancel with a reason; a replacement is held.
    tab.fill("#motif", "Station biométrique en panne").await;
    tab.click_and_wait("form[action$='/annuler'] button").await;
    let text = tab.text().await;
    assert!(
        text.contains("Nouveau créneau proposé et réservé"),
        "{text}"
    );
    app.deliver().await;
    let notice = twilio.sent_to(MOBILE).pop().unwrap();
    let link = notice
        .body
        .split_whitespace()
        .find(|w| w.contains("/r/"))
        .expect("a link")
        .to_owned();
    let path = format!("/r/{}", link.split("/r/").nth(1).unwrap());

    // The citizen, on a phone, accepts.
    let phone = browser.tab(360, 740, false).await;
    phone.goto(&url(&app, &path)).await;
    let text = phone.text().await;
    assert!(text.contains("Nouveau rendez-vous proposé"), "{text}");
    assert!(text.contains("Station biométrique en panne"));
    phone
        .click_and_wait("form[action$='/accepter'] button")
        .await;
    assert!(
        phone
            .text()
            .await
            .contains("Votre rendez-vous est confirmé.")
    );
    let store = app.app.engine().store();
    let token = path.trim_start_matches("/r/");
    let accepted = store
        .appointment_by_token(&guichet::domain::otp::token_hash(token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.status, Status::Confirmed);
    assert!(accepted.replaces_id.is_some());
}

async fn audit(tab: &Tab, label: &str) -> Vec<String> {
    let Some(violations) = tab.axe().await else {
        return Vec::new();
    };
    serious(&violations)
        .into_iter()
        .map(|v| format!("{label}: {v}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_page_passes_axe_without_serious_violations() {
    let Some(browser) = chrome::browser().await else {
        return;
    };
    let db = TestDb::sqlite().await;
    let (app, _twilio) = demo_app(&db).await;
    let tab = browser.tab(1280, 900, true).await;
    let mut found = Vec::new();
    tab.goto(&url(&app, "/agent/connexion")).await;
    found.extend(audit(&tab, "connexion").await);
    tab.fill("#email", "admin@annecy.demo").await;
    tab.fill("#password", "wrong password").await;
    tab.click_and_wait("main form button[type=submit]").await;
    found.extend(audit(&tab, "connexion with error").await);

    sign_in(&app, &tab, "admin@annecy.demo").await;
    let service = titres(&app).await;
    for path in [
        "/agent/jour?date=2026-12-02".to_owned(),
        "/agent/recherche?q=dupont".to_owned(),
        format!("/agent/reserver?demarche={service}&personnes=2"),
        "/agent/fermer".to_owned(),
        "/agent/configuration".to_owned(),
        "/agent/configuration/horaires".to_owned(),
        "/agent/configuration/horaires/1".to_owned(),
        "/agent/configuration/lieux/1".to_owned(),
        format!("/agent/configuration/demarches/{service}"),
        "/agent/configuration/plannings/1".to_owned(),
        "/agent/statistiques?du=2026-11-01&au=2026-12-31".to_owned(),
        "/agent/journal".to_owned(),
    ] {
        tab.goto(&url(&app, &path)).await;
        assert!(!tab.title().await.contains("introuvable"), "{path}");
        found.extend(audit(&tab, &path).await);
    }
    // A booking form with its errors, an appointment, a closure's preview.
    tab.goto(&url(
        &app,
        &format!("/agent/reserver?demarche={service}&personnes=1"),
    ))
    .await;
    tab.fill("#mobile", "12").await;
    tab.fill("#nom", "Essai").await;
    tab.click_and_wait("form[method=post][action='/agent/reserver'] button[type=submit]")
        .await;
    found.extend(audit(&tab, "booking with errors").await);
    tab.fill("#mobile", "").await;
    tab.click_and_wait("form[method=post][action='/agent/reserver'] button[type=submit]")
        .await;
    assert!(tab.text().await.contains("Rendez-vous réservé."));
    found.extend(audit(&tab, "appointment").await);
    tab.goto(&url(&app, "/agent/fermer")).await;
    tab.fill("#motif", "Fermeture exceptionnelle").await;
    tab.click_and_wait("main form button[type=submit]").await;
    found.extend(audit(&tab, "closure preview").await);
    sign_out(&tab).await;

    sign_in(&app, &tab, "plateforme@guichet.demo").await;
    for path in [
        "/agent/plateforme",
        "/agent/plateforme/comptes",
        "/agent/plateforme/communes/1",
    ] {
        tab.goto(&url(&app, path)).await;
        found.extend(audit(&tab, path).await);
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
