// The dashboard page: polls the server's JSON endpoints and fills the page. No framework, no build.
"use strict";

const STATS_EVERY_MS = 1000;
const ACCURACY_EVERY_MS = 5000;
const REQUEST_TIMEOUT_MS = 4000;
const SPARK_POINTS = 120; // two minutes of throughput at one reading per second

const throughputHistory = [];
const tiles = new Map(); // image id -> its tile, kept while the image is among the latest

const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store", signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// Formatting: null or undefined is "n/a", never 0.
const known = (x) => x !== null && x !== undefined && !Number.isNaN(x);
const count = (x) => (known(x) ? Math.round(x).toLocaleString("en-US") : "n/a");
const rate = (x) => (known(x) ? x.toFixed(x >= 100 ? 0 : 1) : "n/a");
const seconds = (x) => (!known(x) ? "n/a" : x >= 1 ? `${x.toFixed(2)} s` : `${(x * 1000).toFixed(x < 0.01 ? 1 : 0)} ms`);
const percent = (x) => (known(x) ? `${(x * 100).toFixed(1)} %` : "n/a");

function setText(id, text) {
  const element = $(id);
  if (element.textContent !== text) element.textContent = text;
}

function showStats(stats) {
  setText("throughput", rate(stats.throughput));
  setText("stored", count(stats.stored));
  setText("database", stats.database || "");
  const latency = stats.latency || {};
  setText("p50", seconds(latency.p50));
  setText("p95", seconds(latency.p95));
  let latencyDetail = "stored_at − sent_at";
  if (latency.count) latencyDetail += `, latest ${count(latency.count)} in ${latency.window_s} s`;
  else if (stats.latency) latencyDetail = `nothing stored in the last ${latency.window_s} s`;
  setText("latency-detail", latencyDetail);
  setText("lag", count(stats.lag.total));
  setText("lag-bridge", count(stats.lag.bridge));
  setText("lag-consumer", count(stats.lag.consumer));
  setText("dead-letters", count(stats.dead_letters.total));
  setText("dead-bridge", count(stats.dead_letters.bridge));
  setText("dead-consumer", count(stats.dead_letters.consumer));
  const bridge = stats.bridge || {};
  const consumer = stats.consumer || {};
  setText("batch-size", known(bridge.batch_size_mean) ? bridge.batch_size_mean.toFixed(1) : "n/a");
  setText("inference", seconds(bridge.inference_s_mean));
  setText("write", seconds(consumer.write_s_mean));

  throughputHistory.push(known(stats.throughput) ? stats.throughput : null);
  if (throughputHistory.length > SPARK_POINTS) throughputHistory.shift();
  drawSparkline();
  return stats.couchdb_error;
}

function drawSparkline() {
  const canvas = $("sparkline");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio;
  const height = canvas.clientHeight * ratio;
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...throughputHistory.filter(known));
  const step = width / (SPARK_POINTS - 1);
  const offset = SPARK_POINTS - throughputHistory.length;
  context.beginPath();
  let drawing = false;
  throughputHistory.forEach((value, i) => {
    if (!known(value)) {
      drawing = false;
      return;
    }
    const x = (offset + i) * step;
    const y = height - 2 * ratio - (value / top) * (height - 4 * ratio);
    if (drawing) context.lineTo(x, y);
    else context.moveTo(x, y);
    drawing = true;
  });
  context.strokeStyle = "#2f6fb2";
  context.lineWidth = 1.5 * ratio;
  context.stroke();
}

function line(className, text, title) {
  const paragraph = document.createElement("p");
  paragraph.className = className;
  paragraph.textContent = text;
  if (title) paragraph.title = title;
  return paragraph;
}

function tileFor(image) {
  const tile = document.createElement("figure");
  tile.className = "tile";
  tile.dataset.id = image.id;
  if (image.ground_truth) tile.classList.add(image.label === image.ground_truth ? "correct" : "wrong");
  const picture = document.createElement("img");
  Object.assign(picture, { src: image.url, alt: image.subject || image.id, width: 96, height: 96 });
  const label = line("label", image.label ?? "?", `predicted by model version ${image.model_version ?? "?"}`);
  if (known(image.score)) label.append(Object.assign(document.createElement("small"), { textContent: ` ${(image.score * 100).toFixed(0)}%` }));
  tile.append(
    picture,
    label,
    line("truth", `true: ${image.ground_truth ?? "unknown"}`),
    line("producer", image.producer_id ?? "", `${image.subject ?? ""} from ${image.producer_id ?? "?"}`),
    line("latency", seconds(image.latency_s), `stored ${image.stored_at ?? "?"}, end-to-end latency`),
  );
  return tile;
}

function showLatest(latest) {
  const grid = $("latest");
  if (!latest.images) return latest.couchdb_error;
  if (latest.images.length === 0) {
    tiles.clear();
    grid.replaceChildren(line("empty", "no images yet"));
    return null;
  }
  const ids = latest.images.map((image) => image.id);
  if (ids.join() === [...grid.children].map((child) => child.dataset.id).join()) return null;
  const wanted = new Set(ids);
  for (const id of tiles.keys()) if (!wanted.has(id)) tiles.delete(id);
  for (const image of latest.images) if (!tiles.has(image.id)) tiles.set(image.id, tileFor(image));
  grid.replaceChildren(...ids.map((id) => tiles.get(id)));
  return null;
}

function showAccuracy(accuracy) {
  const body = $("accuracy").tBodies[0];
  if (!accuracy.versions) return;
  const rows = accuracy.versions.map((version) => {
    const row = document.createElement("tr");
    for (const [text, number] of [
      [version.model, false],
      [version.model_version, false],
      [count(version.correct), true],
      [count(version.total), true],
      [percent(version.accuracy), true],
    ]) {
      const cell = row.insertCell();
      cell.textContent = text;
      if (number) cell.className = "number";
    }
    return row;
  });
  if (rows.length === 0) {
    const row = document.createElement("tr");
    Object.assign(row.insertCell(), { colSpan: 5, className: "empty", textContent: "no images with a ground truth yet" });
    rows.push(row);
  }
  body.replaceChildren(...rows);
  const asOf = accuracy.as_of ? `, as of ${new Date(accuracy.as_of).toLocaleTimeString()}` : "";
  setText("accuracy-detail", `every stored image with a ground truth${asOf}`);
}

function showStatus(error) {
  const status = $("status");
  status.classList.toggle("error", Boolean(error));
  status.textContent = error ? `problem: ${error}` : `updated ${new Date().toLocaleTimeString()}`;
}

async function refreshStats() {
  try {
    const [stats, latest] = await Promise.all([getJSON("api/stats"), getJSON("api/latest")]);
    showStatus(showStats(stats) || showLatest(latest));
  } catch (error) {
    showStatus(`dashboard server not answering (${error.message})`);
  } finally {
    setTimeout(refreshStats, STATS_EVERY_MS);
  }
}

async function refreshAccuracy() {
  try {
    showAccuracy(await getJSON("api/accuracy"));
  } catch {
    // the status line already says when the server is away
  } finally {
    setTimeout(refreshAccuracy, ACCURACY_EVERY_MS);
  }
}

refreshStats();
refreshAccuracy();
