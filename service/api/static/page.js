// The import page's script: sends the form to /ui/preview or /ui/imports, then follows the
// import. Everything from the server is written with textContent, never as HTML.
"use strict";

(function () {
  const FINAL = ["finished", "failed", "cancelled", "reverted"];
  const MEANING = {
    added: "new subscribers, or existing ones newly added to a list",
    updated: "subscribers already there whose values were updated",
    failed: "rows that cannot be used: the reason is in the failed log",
    skipped_duplicate: "the same email came earlier in the file (the first one counts)",
    skipped_over_limit: "beyond the subscriber limit: not added",
    skipped_overwrite: "already on the lists: left unchanged (Overwrite is off)",
    skipped_active: "already on the lists and active: left unchanged",
    skipped_unsubscribed: "they unsubscribed from a list: not subscribed again",
    skipped_bounced: "their mail bounced: left unchanged",
    skipped_deactivated: "deactivated: left unchanged",
    skipped_scomp: "they complained (marked as spam): left unchanged",
    skipped_blocklisted: "blocklisted: never subscribed again",
    unsubscribed_others: "list members absent from the file, unsubscribed",
  };
  const STATE_NOTE = {
    draft: "not started",
    scheduled: "waiting for its turn (one import writes at a time)",
    downloading: "fetching the file",
    splitting: "reading and checking the file",
    importing: "writing the subscribers",
    paused: "paused: it resumes where it stopped",
    finished: "done",
    failed: "it stopped with an error",
    cancelled: "it was cancelled",
    reverted: "it was undone",
  };

  const $ = (id) => document.getElementById(id);
  let watching = 0; // the import followed now; a newer one stops the older loop

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function showError(message) {
    $("error").textContent = message || "";
    $("error").hidden = !message;
  }

  function busy(text) {
    $("busy").textContent = text || "";
    $("preview-button").disabled = Boolean(text);
    $("start-button").disabled = Boolean(text);
  }

  function chosenLists() {
    const names = Array.from(document.querySelectorAll("input[name=list]:checked"), (box) => box.value);
    const extra = $("new-list").value.trim();
    if (extra && !names.includes(extra)) names.push(extra);
    return names;
  }

  function formData() {
    const file = $("file").files[0];
    if (!file) throw new Error("Choose a CSV file first.");
    const data = new FormData();
    data.append("lists", JSON.stringify(chosenLists()));
    data.append("mode", $("mode").value);
    data.append("subscription_status", $("subscription-status").value);
    data.append("overwrite", $("overwrite").checked ? "true" : "false");
    data.append("delimiter", $("delimiter").value);
    data.append("file", file, file.name);
    return data;
  }

  // fetch, and the server's {"message"} as the error of a refused request.
  async function call(url, options) {
    let response;
    try {
      response = await fetch(url, Object.assign({ credentials: "same-origin", cache: "no-store" }, options));
    } catch (err) {
      throw new Error("The server cannot be reached (" + err.message + ").");
    }
    if (response.ok) return response;
    let message = "The server answered " + response.status + " " + response.statusText + ".";
    try {
      const body = await response.json();
      if (body && typeof body.message === "string") message = body.message;
    } catch (err) { /* not JSON: keep the status */ }
    if (response.status === 401 || response.status === 403) message += " Reload the page to sign in again.";
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }

  function fillCounts(tbody, counts) {
    tbody.replaceChildren();
    for (const [category, count] of Object.entries(counts || {})) {
      if (!count) continue;
      const row = document.createElement("tr");
      row.append(element("td", category), element("td", count, "number"), element("td", MEANING[category] || ""));
      tbody.append(row);
    }
    if (!tbody.children.length) {
      const row = document.createElement("tr");
      row.append(element("td", "no rows"), element("td", 0, "number"), element("td", ""));
      tbody.append(row);
    }
  }

  function showPreview(result) {
    const named = result.lists.map((name) => result.new_lists.includes(name) ? name + " (new: the import makes it)" : name);
    const lists = named.length ? "into " + named.join(", ") : "into no list";
    $("preview-summary").textContent = result.number_of_records + " records read. Importing them " + lists + " would give:";
    fillCounts($("preview-counts").tBodies[0], result.counts);

    const mapping = $("preview-mapping");
    mapping.replaceChildren(...result.mapping.map((line) => element("li", line)));

    const failed = result.failed;
    const table = $("preview-failed");
    table.tHead.replaceChildren();
    table.tBodies[0].replaceChildren();
    if (!failed.total) {
      $("preview-failed-note").textContent = "No row failed.";
      table.hidden = true;
    } else {
      $("preview-failed-note").textContent = failed.total > failed.shown
        ? "The first " + failed.shown + " of " + failed.total + " failed rows, each with its reason:"
        : failed.total + " failed row" + (failed.total > 1 ? "s" : "") + ", each with its reason:";
      const head = document.createElement("tr");
      head.append(...failed.header.map((name) => element("th", name)));
      table.tHead.append(head);
      for (const cells of failed.rows) {
        const row = document.createElement("tr");
        row.append(...cells.map((cell) => element("td", cell)));
        table.tBodies[0].append(row);
      }
      table.hidden = false;
    }
    $("preview").hidden = false;
  }

  async function runPreview() {
    showError("");
    let data;
    try { data = formData(); } catch (err) { showError(err.message); return; }
    busy("Checking the file…");
    $("preview").hidden = true;
    try {
      const response = await call("/ui/preview", { method: "POST", body: data });
      showPreview(await response.json());
    } catch (err) {
      showError(err.message);
    } finally {
      busy("");
    }
  }

  // A list the import made becomes a box like the others, ticked as it was chosen.
  function addListBox(name) {
    const boxes = Array.from(document.querySelectorAll("input[name=list]"));
    if (boxes.some((box) => box.value === name)) return;
    const label = element("label", null, "list");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "list";
    box.value = name;
    box.checked = true;
    label.append(box, " " + name);
    const hint = $("no-lists");
    if (hint) hint.remove();
    $("lists").insertBefore(label, $("new-list").previousElementSibling);
  }

  async function startImport() {
    showError("");
    let data;
    try { data = formData(); } catch (err) { showError(err.message); return; }
    const lists = chosenLists();
    busy("Uploading…");
    try {
      const response = await call("/ui/imports", { method: "POST", body: data });
      const created = await response.json();
      lists.forEach(addListBox); // a new list exists from now on
      $("new-list").value = "";
      history.replaceState(null, "", "#import-" + encodeURIComponent(created.id));
      follow(created.id);
    } catch (err) {
      showError(err.message);
    } finally {
      busy("");
    }
  }

  function logLink(id, category) {
    const link = element("a", category);
    link.href = "/ui/imports/" + encodeURIComponent(id) + "/logs/" + encodeURIComponent(category);
    link.target = "_blank";
    link.rel = "noopener";
    return link;
  }

  function showDocument(doc) {
    $("import-state").textContent = doc.state;
    $("import-state-note").textContent = STATE_NOTE[doc.state] ? "(" + STATE_NOTE[doc.state] + ")" : "";
    const stats = doc.stats;
    const total = stats.number_of_records;
    $("import-bar").max = total || 1;
    $("import-bar").value = total ? stats.records_imported : 0;
    $("import-records").textContent = total === null || total === undefined
      ? "records: not counted yet"
      : stats.records_imported + " of " + total + " records processed";
    $("import-error").textContent = doc.error_message || "";
    $("import-error").hidden = !doc.error_message;
    if (doc.run_url) {
      $("run-link").href = doc.run_url;
      $("run").hidden = false;
    }
  }

  async function showResult(doc) {
    fillCounts($("import-counts").tBodies[0], doc.stats.subscribers);
    const links = $("import-logs");
    links.replaceChildren();
    const categories = ["log"].concat(Object.keys(doc.stats.subscribers).filter((c) => doc.stats.subscribers[c]));
    if (doc.stats.unsubscribed_others) categories.push("unsubscribed_others");
    for (const category of categories) {
      const item = document.createElement("li");
      item.append(logLink(doc.id, category));
      links.append(item);
    }
    $("import-result").hidden = false;
    try {
      const response = await call("/ui/imports/" + encodeURIComponent(doc.id) + "/logs/log");
      $("import-log").textContent = (await response.text()) || "(the log is empty)";
    } catch (err) {
      $("import-log").textContent = "The log cannot be read: " + err.message;
    }
  }

  async function follow(id) {
    const me = ++watching;
    $("import-id").textContent = id;
    $("import-state").textContent = "…";
    $("import-state-note").textContent = "";
    $("import-records").textContent = "";
    $("import-error").hidden = true;
    $("run").hidden = true;
    $("import-result").hidden = true;
    $("import-log").textContent = "";
    $("progress").hidden = false;
    $("progress").scrollIntoView({ block: "start" });
    while (me === watching) {
      try {
        const response = await call("/ui/imports/" + encodeURIComponent(id));
        const doc = await response.json();
        if (me !== watching) return;
        showError("");
        showDocument(doc);
        if (FINAL.includes(doc.state)) {
          await showResult(doc);
          return;
        }
      } catch (err) {
        showError(err.message);
        if ([401, 403, 404].includes(err.status)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("import-form").addEventListener("submit", (event) => event.preventDefault());
    $("preview-button").addEventListener("click", runPreview);
    $("start-button").addEventListener("click", startImport);
    $("file").addEventListener("change", () => {
      const file = $("file").files[0];
      if (file && /\.tsv$/i.test(file.name) && $("delimiter").value === ",") $("delimiter").value = "tab";
    });
    const shown = /^#import-(.+)$/.exec(location.hash); // a reload keeps following the import
    if (shown) follow(decodeURIComponent(shown[1]));
  });
})();
