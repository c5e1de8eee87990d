// The supervisor board in a real browser (Debian's chromium, driven over the DevTools protocol by
// playwright-core), against the cluster deploy/test-board.sh started. It signs in, then checks
// through the page that a status change made with the CLI shows within 2 s without a reload,
// that a workgroup's queue count follows a routed and a cancelled call, that an alert rule on that
// queue shows raised and then cleared, and that the board keeps updating after the leader is
// killed. Screenshots go to $OUT.
"use strict";
const { chromium } = require("playwright-core");
const { execFileSync } = require("child_process");

const { BOARD_URL, BIN, ENDPOINTS, TOKEN_FILE, TOKEN, LEADER_PID, OUT } = process.env;
const cli = (...args) =>
  execFileSync(BIN, ["--endpoints", ENDPOINTS, "--token-file", TOKEN_FILE, ...args], { encoding: "utf8" });
const say = (text) => console.error(`== board: ${text}`);

async function within(page, ms, what, predicate, arg) {
  const started = Date.now();
  try {
    await page.waitForFunction(predicate, arg, { timeout: ms, polling: 50 });
  } catch (error) {
    throw new Error(`${what}: not seen within ${ms} ms`);
  }
  return Date.now() - started;
}
const statusOf = ([user, status]) => {
  const row = document.querySelector(`#presence tr[data-username="${user}"]`);
  return row !== null && row.children[4].textContent === status;
};
const alertIs = ([name, state]) => {
  const row = document.querySelector(`#alerts tr[data-alert="${name}"]`);
  return row !== null && row.querySelector(".state").textContent === state;
};
const queuedIn = ([workgroup, count]) => {
  const row = document.querySelector(`#workgroups tr[data-workgroup="${workgroup}"]`);
  return row !== null && row.querySelector(".queued").textContent === String(count);
};

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(BOARD_URL);
    await page.waitForSelector("#signin:not([hidden])");
    await page.fill("#token", "not-the-token");
    await page.click("#tokenform button");
    await page.waitForFunction(() => document.querySelector("#signinerror").textContent.length > 0);
    say(`a wrong token is refused: ${await page.textContent("#signinerror")}`);
    await page.fill("#token", TOKEN);
    await page.click("#tokenform button");
    await page.waitForSelector("#board:not([hidden])");
    await within(page, 5000, "the live feed", () => document.querySelector("#feed").textContent === "live");
    if (!page.url().startsWith(BOARD_URL) || page.url().includes(TOKEN)) throw new Error("the token is in the URL");
    say(`signed in as ${await page.textContent("#who")}`);

    cli("status", "set", "ada", "At Lunch", "--until-minutes", "30");
    let ms = await within(page, 2000, "ada's status change", statusOf, ["ada", "At Lunch"]);
    say(`a status change set with the CLI showed after ${ms} ms`);

    cli("alert", "add", "sales-queue", "--statistic", "workgroup.queued", "--workgroup", "Sales", "--above", "0");
    cli("route", "call", "--id", "board-call-1", "--origin", "1", "--workgroup", "Sales");
    ms = await within(page, 2000, "the queued call", queuedIn, ["Sales", 1]);
    say(`a routed call with no agent free showed in Sales' queue after ${ms} ms`);
    ms = await within(page, 3000, "the raised alert", alertIs, ["sales-queue", "RAISED"]);
    say(`the alert on Sales' queue showed raised after ${ms} more ms`);
    await page.screenshot({ path: `${OUT}/board.png`, fullPage: true });
    cli("route", "cancel", "board-call-1");
    ms = await within(page, 2000, "the cancelled call", queuedIn, ["Sales", 0]);
    say(`the cancelled call left the queue after ${ms} ms`);
    ms = await within(page, 3000, "the cleared alert", alertIs, ["sales-queue", "clear"]);
    say(`the alert cleared after ${ms} more ms`);
    const history = JSON.parse(cli("-w", "json", "alert", "history")).records.map((r) => `${r.name}:${r.raised}`);
    if (history.join(",") !== "sales-queue:true,sales-queue:false") throw new Error(`alert history ${history}`);

    process.kill(Number(LEADER_PID), "SIGKILL");
    say(`killed the leader (pid ${LEADER_PID})`);
    const deadline = Date.now() + 15000;
    for (;;) {
      try { cli("status", "set", "ada", "Available"); break; } catch (error) {
        if (Date.now() > deadline) throw new Error("no write succeeded after the leader was killed");
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    ms = await within(page, 2000, "the status change after the leader's kill", statusOf, ["ada", "Available"]);
    say(`after the leader's kill, a status change showed after ${ms} ms`);
    await page.screenshot({ path: `${OUT}/board-after-leader-kill.png`, fullPage: true });
    say("ok");
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(`== board: FAILED: ${error.message}`);
  process.exit(1);
});
