//! The citizens' pages in a real headless Chromium: a whole booking — the code read from the
//! SMS the local Twilio-compatible server received — then a move and a cancellation, on a
//! 360 px phone and on a 1280 px desktop, with and without JavaScript; keyboard focus; and
//! axe-core on every citizen page, with no serious or critical violation allowed.

use crate::chrome::{self, Tab, serious};
use crate::fake_twilio::FakeTwilio;
use crate::helpers::{TestApp, TestDb, World};
use guichet::domain::Status;

const MOBILE: &str = "+33639980077";

struct Site {
    world: World,
    app: TestApp,
    twilio: FakeTwilio,
}

async fn site() -> Site {
    let world = World::new(TestDb::sqlite().await).await;
    let (app, twilio) = TestApp::with_twilio(&world.db, world.clock.clone()).await;
    Site { world, app, twilio }
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }
}

/// Home → search → commune → CNI/passport for 2 at the first free place → first slot →
/// details → code → personal page. Returns the personal page's path.
async fn book(site: &Site, tab: &Tab) -> String {
    tab.goto(&site.url("/")).await;
    assert_eq!(tab.title().await, "Prendre rendez-vous en mairie — guichet");
    tab.fill("#q", "testville").await;
    tab.click_and_wait("form[role=search] button").await;
    assert!(tab.text().await.contains("1 commune pour « testville »"));
    tab.click_and_wait("a[href='/testville']").await;
    assert!(tab.title().await.starts_with("Étape 1 sur 5"));
    tab.click_and_wait("a[href='/testville/demarche/1']").await;
    assert!(tab.title().await.starts_with("Étape 2 sur 5"));
    tab.select("#persons", "2").await;
    tab.check("#location-any").await;
    tab.click_and_wait("main form button[type=submit]").await;
    assert!(
        tab.title().await.starts_with("Étape 3 sur 5"),
        "{}",
        tab.url().await
    );
    let text = tab.text().await;
    assert!(text.contains("2 personnes"), "{text}");
    tab.click_and_wait(".slot-grid button").await;
    assert!(
        tab.title().await.starts_with("Étape 4 sur 5"),
        "{}",
        tab.text().await
    );
    assert_eq!(
        site.world.all_appointments().await[0].status,
        Status::Held,
        "held as soon as chosen"
    );
    tab.fill("#nom", "Martin").await;
    tab.fill("#prenom", "Léa").await;
    tab.fill("#mobile", "06 39 98 00 77").await;
    tab.fill("#ants1", "ABCDE12345").await;
    tab.click_and_wait("main form button[type=submit]").await;
    assert!(
        tab.title().await.starts_with("Étape 5 sur 5"),
        "{}",
        tab.text().await
    );
    assert!(tab.text().await.contains("par SMS au +33 6 ** ** ** 77"));
    site.app.deliver().await;
    let code = site.twilio.last_code(MOBILE).expect("the code went by SMS");
    tab.fill("#code", &code).await;
    tab.click_and_wait("form[action$='/code'] button").await;
    let text = tab.text().await;
    assert!(text.contains("Votre rendez-vous est confirmé."), "{text}");
    assert!(text.contains("Une pièce d'identité."), "what to bring");
    assert!(tab.exists("a[href$='/rdv.ics']").await);
    let url = tab.url().await;
    let path = url
        .strip_prefix(&site.app.address)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    assert!(path.starts_with("/r/"), "{path}");
    path
}

async fn move_then_cancel(site: &Site, tab: &Tab, personal: &str) {
    let before = site.world.all_appointments().await[0].starts_at;
    tab.click_and_wait("a[href$='/deplacer']").await;
    assert!(tab.text().await.contains("Déplacer le rendez-vous"));
    tab.click_and_wait(".day:last-of-type .slot-grid li:last-child button")
        .await;
    assert!(
        tab.text()
            .await
            .contains("Votre rendez-vous a été déplacé.")
    );
    let all = site.world.all_appointments().await;
    let confirmed: Vec<_> = all
        .iter()
        .filter(|a| a.status == Status::Confirmed)
        .collect();
    assert_eq!(confirmed.len(), 1);
    assert_ne!(confirmed[0].starts_at, before);
    tab.click_and_wait("a[href$='/annuler']").await;
    assert!(tab.text().await.contains("Annuler ce rendez-vous ?"));
    tab.click_and_wait("main form button.danger").await;
    assert!(tab.text().await.contains("Votre rendez-vous est annulé."));
    assert!(tab.url().await.contains(personal));
    assert!(
        site.world
            .all_appointments()
            .await
            .iter()
            .all(|a| a.status != Status::Confirmed)
    );
}

async fn whole_path(width: u32, height: u32, javascript: bool) {
    let Some(browser) = chrome::browser().await else {
        return;
    };
    let site = site().await;
    let tab = browser.tab(width, height, javascript).await;
    let personal = book(&site, &tab).await;
    move_then_cancel(&site, &tab, &personal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_books_moves_and_cancels() {
    whole_path(360, 740, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_books_moves_and_cancels() {
    whole_path(1280, 900, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_without_javascript_books_moves_and_cancels() {
    whole_path(360, 740, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyboard_reaches_the_skip_link_first_and_the_page_fits_a_phone() {
    let Some(browser) = chrome::browser().await else {
        return;
    };
    let site = site().await;
    let tab = browser.tab(360, 740, true).await;
    tab.goto(&site.url("/testville/demarche/1/creneaux?persons=1&location="))
        .await;
    let first = tab.press_tab_and_focused().await;
    assert!(first.contains("Aller au contenu"), "{first}");
    // Nothing wider than the screen: no sideways scrolling on a phone.
    let overflow = tab
        .eval("document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(overflow, serde_json::json!(true));
}

/// Visits `path` and checks it with axe-core; returns the serious or critical findings.
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
async fn every_citizen_page_passes_axe_without_serious_violations() {
    let Some(browser) = chrome::browser().await else {
        return;
    };
    let site = site().await;
    let tab = browser.tab(360, 740, true).await;
    let mut found = Vec::new();
    for path in [
        "/",
        "/?q=74999",
        "/?q=nulle%20part",
        "/testville",
        "/testville/demarche/1",
        "/testville/demarche/1/creneaux?persons=1&location=",
        "/rdv/retrouver",
        "/accessibilite",
        "/donnees-personnelles",
        "/page-qui-n-existe-pas",
    ] {
        tab.goto(&site.url(path)).await;
        found.extend(audit(&tab, path).await);
    }
    // The pages of a booking, errors included.
    tab.goto(&site.url("/testville/demarche/1/creneaux?persons=1&location="))
        .await;
    tab.click_and_wait(".slot-grid button").await;
    found.extend(audit(&tab, "details").await);
    tab.fill("#mobile", "12").await;
    tab.click_and_wait("main form button[type=submit]").await;
    assert!(tab.text().await.contains("Il y a"));
    found.extend(audit(&tab, "details with errors").await);
    tab.fill("#nom", "Martin").await;
    tab.fill("#prenom", "Léa").await;
    tab.fill("#mobile", "06 39 98 00 77").await;
    tab.click_and_wait("main form button[type=submit]").await;
    found.extend(audit(&tab, "code").await);
    tab.fill("#code", "000000").await;
    tab.click_and_wait("form[action$='/code'] button").await;
    found.extend(audit(&tab, "code with error").await);
    site.app.deliver().await;
    let code = site.twilio.last_code(MOBILE).unwrap();
    tab.fill("#code", &code).await;
    tab.click_and_wait("form[action$='/code'] button").await;
    found.extend(audit(&tab, "personal page").await);
    let personal = tab.url().await;
    tab.click_and_wait("a[href$='/deplacer']").await;
    found.extend(audit(&tab, "move").await);
    tab.goto(&tab.url().await.replace("/deplacer", "/annuler"))
        .await;
    found.extend(audit(&tab, "cancel").await);
    tab.goto(&site.url("/rdv/retrouver")).await;
    tab.fill("#contact", "06 39 98 00 77").await;
    tab.click_and_wait("main form button[type=submit]").await;
    found.extend(audit(&tab, "link sent").await);
    tab.goto(&personal.replace("?confirme=1", "/annuler")).await;
    tab.click_and_wait("main form button.danger").await;
    found.extend(audit(&tab, "cancelled").await);
    // A hold that lapsed and was taken meanwhile: the nearest slots are offered.
    let annex = site.world.annex;
    tab.goto(&site.url(&format!("/testville/demarche/2/creneaux?location={annex}")))
        .await;
    tab.click_and_wait(".slot-grid button").await;
    let held = site
        .world
        .all_appointments()
        .await
        .into_iter()
        .find(|a| a.status == Status::Held)
        .unwrap();
    site.world.clock.advance(chrono::Duration::minutes(11));
    for n in 0..2 {
        let mut request = site
            .world
            .request(site.world.school, held.starts_at, 700 + n);
        request.location = Some(annex);
        site.world
            .engine
            .book(&request, guichet::booking::BookingMode::Confirmed)
            .await
            .unwrap();
    }
    tab.fill("#nom", "Durand").await;
    tab.fill("#prenom", "Paul").await;
    tab.fill("#email", "paul@exemple.fr").await;
    tab.click_and_wait("main form button[type=submit]").await;
    assert!(tab.text().await.contains("n'est plus disponible"));
    found.extend(audit(&tab, "slot slipped away").await);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_phone_calls_the_voice_menu_from_the_browser() {
    let Some(browser) = chrome::browser().await else {
        return;
    };
    let world = World::new(TestDb::sqlite().await).await;
    let app = TestApp::spawn_with(
        &world.db,
        world.clock.clone(),
        crate::helpers::TestAppOptions {
            demo: true,
            ..Default::default()
        },
    )
    .await;
    let tab = browser.tab(1280, 900, true).await;
    tab.goto(&format!("{}/dev/phone", app.address)).await;
    tab.eval("document.querySelector('#dial button[type=submit]').click()")
        .await;
    let mut heard = String::new();
    for _ in 0..50 {
        heard = tab.text().await;
        if heard.contains("Mairie : Mairie de Ville de testville") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        heard.contains("Mairie : Mairie de Ville de testville, bonjour."),
        "{heard}"
    );
    tab.eval("document.querySelector('.key[data-key=\"1\"]').click(); document.getElementById('send').click()")
        .await;
    for _ in 0..50 {
        heard = tab.text().await;
        if heard.contains("Quelle démarche ?") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(heard.contains("Mairie : Quelle démarche ?"), "{heard}");
}
