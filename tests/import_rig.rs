//! `kapell import compose` end to end on the rig (tests/support): a two-service Compose project
//! with a `.env` file, local images, a health-checked database and a web service that depends on
//! it is imported on a real systemd host, checked, applied, and answers; the web container reaches
//! the database by its Compose service name on the stack network (`kapell-shop`).

mod support;

use anyhow::{Context, Result, ensure};
use std::time::Duration;
use support::{Dockerd, Host};

const IMAGE: &str = "kapell-demo/busybox:1";

const COMPOSE: &str = r#"services:
  db:
    image: kapell-demo/busybox:1
    # $${GREETING} reaches the shell in the container, which expands it from the environment.
    command: sh -c 'mkdir -p /data && echo "$${GREETING}" > /data/greeting && sleep 1 && touch /tmp/ready && exec httpd -f -p 5432 -h /data'
    environment:
      GREETING: ${GREETING:-hello from the default}
    volumes:
      - data:/data
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      retries: 5
    restart: unless-stopped
  web:
    image: kapell-demo/busybox:1
    command: ["sh", "-c", "mkdir -p /www && echo '<h1>imported from Compose</h1>' > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
      - "127.0.0.1:8080:8080"
    depends_on:
      db:
        condition: service_healthy
volumes:
  data:
"#;

#[test]
fn an_imported_compose_project_is_applied_and_answers() -> Result<()> {
    let dockerd = Dockerd::start()?;
    dockerd.import_busybox(IMAGE)?;
    let host = Host::builder().name("import").kapell(env!("CARGO_BIN_EXE_kapell")).docker(&dockerd).boot()?;
    let project = host.root().join("srv/shop");
    std::fs::create_dir_all(&project)?;
    std::fs::write(project.join("compose.yaml"), COMPOSE)?;
    std::fs::write(project.join(".env"), "GREETING=hello from .env\n")?;
    std::fs::create_dir_all(host.root().join("etc/kapell"))?;

    // Lossless: exit 0, and the stack lands in /etc/kapell under the project's name.
    let imported = host.exec(&["sh", "-c", "cd /srv/shop && kapell import compose --out /etc/kapell"])?;
    let stderr = String::from_utf8_lossy(&imported.stderr);
    ensure!(imported.status.code() == Some(0), "import failed ({}): {stderr}", imported.status);
    ensure!(stderr.contains("as stack `shop` (2 services): /etc/kapell/shop.toml"), "{stderr}");

    host.exec_ok(&["kapell", "check"])?;
    let applied = host.exec_ok(&["kapell", "apply"])?;
    ensure!(applied.contains("shop-web.service") && applied.contains("shop-db.service"), "{applied}");

    let status = host.exec_ok(&["kapell", "status", "shop"])?;
    for service in ["shop-db.service", "shop-web.service"] {
        let line = status.lines().find(|l| l.contains(service)).with_context(|| format!("{service}: {status}"))?;
        ensure!(line.contains("active") && line.contains("running"), "{service} is not running: {line}");
    }
    ensure!(status.contains("healthy"), "db's health check is not shown:\n{status}");

    // depends_on: service_healthy became `requires`: web is ordered after db.
    let after = host.systemctl_ok(&["show", "-p", "After", "--value", "shop-web.service"])?;
    ensure!(after.contains("shop-db.service"), "web is not ordered after db: {after}");

    // The environment, interpolated from .env, reached the database container; the named volume is
    // the one Compose would have used (shop_data).
    let greeting = dockerd.docker_ok(&["exec", "kapell-shop-db", "cat", "/data/greeting"])?;
    ensure!(greeting.trim() == "hello from .env", "greeting: {greeting:?}");
    let volumes = dockerd.docker_ok(&["volume", "ls", "-q"])?;
    ensure!(volumes.lines().any(|v| v == "shop_data"), "volumes: {volumes}");

    // web has no health check: it runs before httpd listens.
    let mut page = String::new();
    let served = support::eventually("web's page", Duration::from_secs(10), || {
        let out = dockerd.docker(&["exec", "kapell-shop-web", "wget", "-qO-", "http://127.0.0.1:8080/"])?;
        page = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(out.status.success())
    });
    served.with_context(|| format!("web's page: {page:?}"))?;
    ensure!(page.contains("imported from Compose"), "unexpected page: {page}");

    // Compose's `db` resolves from `web`, as it did under docker compose.
    let by_name =
        dockerd.docker_ok(&["exec", "kapell-shop-web", "timeout", "10", "wget", "-qO-", "http://db:5432/greeting"])?;
    ensure!(by_name.trim() == "hello from .env", "web reached db by name and got {by_name:?}");
    Ok(())
}
