// edgecnn serve: the page. Plain JavaScript, no build step; it talks to the same JSON API as curl does.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                "#fabed4", "#ffe119"];
// Drawn strokes are as thick as this share of the model's input side: the digits the models learnt from are bold
// (sklearn's 8x8 digits scaled up), and a thin pen line reads as another digit.
const STROKE_SHARE = 0.2;
const SUPERSAMPLE = 8;

let models = [];
let current = null;   // the chosen model's summary from GET /v1/models
let strokes = [];     // the drawing: arrays of [x, y] points in pad pixels
let stream = null;    // the camera, while it runs

// --- models ---------------------------------------------------------------------------------------------------

async function loadModels() {
  const answer = await fetch("v1/models");
  const data = await answer.json();
  models = data.models;
  const select = $("model");
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.task.replace("-", " ")}, ${m.format})`,
                                                         m.name)));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && models.some((m) => m.name === wanted)) select.value = wanted;
  select.disabled = false;
  chooseModel();
}

function isDigitModel(model) {
  const labels = model.labels || [];
  return model.task === "image-classification" && labels.length === 10 &&
         labels.every((label, i) => label === String(i));
}

function chooseModel() {
  current = models.find((m) => m.name === $("model").value);
  const imageModel = current.task !== "text-classification";
  if (!imageModel) stopCamera();
  $("image-input").hidden = !imageModel;
  $("text-input").hidden = imageModel;
  $("draw-input").hidden = !isDigitModel(current);
  const prep = current.preprocessing || {};
  const size = prep.width ? `, input ${prep.width}×${prep.height} ${prep.color_mode}` : "";
  $("model-info").textContent = `${current.task}, ${current.labels.length} labels${size}; ` +
                                `running ${current.format} (exported: ${current.formats.join(", ")})`;
  if (isDigitModel(current)) {
    $("seen").width = prep.width;
    $("seen").height = prep.height;
    $("seen-caption").textContent = `what the model sees (${prep.width}×${prep.height})`;
  }
  clearResult("Waiting for an input.");
}

// --- asking the server ------------------------------------------------------------------------------------------

async function predict(body, contentType, picture) {
  const query = current.task === "object-detection" ? "" : `?top_k=${current.labels.length}`;
  clearResult("Working…");
  const started = performance.now();
  let answer, data;
  try {
    answer = await fetch(`v1/models/${encodeURIComponent(current.name)}:predict${query}`,
                         {method: "POST", body, headers: {"Content-Type": contentType}});
    data = await answer.json();
  } catch (err) {
    showError(`the server did not answer (${err.message}); is edgecnn serve still running?`);
    return;
  }
  if (!answer.ok) {
    showError(data.error || `HTTP ${answer.status}`);
    return;
  }
  const ms = performance.now() - started;
  $("status").textContent = `${current.name} answered in ${ms.toFixed(0)} ms (${data.format}).`;
  if (data.predictions) showClassification(data.predictions);
  if (data.detections) await showDetections(data, picture);
  else if (picture) await showPicture(picture, []);
}

function clearResult(message) {
  $("status").textContent = message;
  $("error").hidden = true;
  $("error").textContent = "";
  $("label").textContent = "–";
  $("score").textContent = "";
  $("bars").replaceChildren();
  $("detections").replaceChildren();
  $("picture").hidden = true;
}

function showError(message) {
  $("status").textContent = "The request failed.";
  $("error").textContent = `error: ${message}`;
  $("error").hidden = false;
}

function showClassification(predictions) {
  const best = predictions[0];
  $("label").textContent = best.label;
  $("score").textContent = `(${(100 * best.score).toFixed(1)} %)`;
  $("bars").replaceChildren(...predictions.map((p) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = p.label;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(100 * p.score).toFixed(2)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * p.score).toFixed(1)} %`;
    item.append(name, track, value);
    return item;
  }));
}

async function showDetections(data, picture) {
  const found = data.detections;
  $("label").textContent = found.length ? found[0].label : "nothing found";
  $("score").textContent = found.length ? `(${found.length} object${found.length > 1 ? "s" : ""})` : "";
  $("detections").replaceChildren(...found.map((d) => {
    const item = document.createElement("li");
    const box = d.box.map((v) => v.toFixed(0)).join(", ");
    item.textContent = `${d.label}: ${(100 * d.score).toFixed(1)} % at [${box}]`;
    return item;
  }));
  if (picture) await showPicture(picture, found, data.image_size);
}

// The input image, scaled to fit, with any boxes drawn over it (boxes come in the original image's pixels).
async function showPicture(blob, detections, imageSize) {
  const image = await createImageBitmap(blob, {imageOrientation: "from-image"});
  const canvas = $("picture");
  // at most 480 px wide; small images (a 28x28 digit, a 128x128 scene) enlarged to 320 px so boxes stay readable
  const scale = Math.min(480, Math.max(320, image.width)) / image.width;
  canvas.width = Math.round(image.width * scale);
  canvas.height = Math.round(image.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = image.width > 64;  // a tiny digit stays crisp pixels
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  const [width, height] = imageSize || [image.width, image.height];
  const sx = canvas.width / width;
  const sy = canvas.height / height;
  ctx.lineWidth = 2;
  ctx.font = "bold 14px system-ui, sans-serif";
  ctx.textBaseline = "bottom";
  for (const d of detections) {
    const color = COLORS[(d.label.charCodeAt(0) + d.label.length) % COLORS.length];
    const [x0, y0, x1, y1] = [d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy];
    ctx.strokeStyle = color;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const w = ctx.measureText(text).width + 6;
    const top = y0 >= 16 ? y0 : y1 + 16;
    ctx.fillStyle = color;
    ctx.fillRect(x0 - 1, top - 16, w, 16);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x0 + 2, top);
  }
  canvas.setAttribute("aria-label", detections.length ?
    `The input image with ${detections.length} box${detections.length > 1 ? "es" : ""} drawn` : "The input image");
  canvas.hidden = false;
}

// --- image: file, drop, camera ------------------------------------------------------------------------------------

function sendImage(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image (${file.type}); choose a PNG, JPEG, ...`);
    return;
  }
  predict(file, file.type || "application/octet-stream", file);
}

function setUpDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    sendImage(event.target.files[0]);
    event.target.value = "";
  });
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const kind of ["dragleave", "drop"]) {
    drop.addEventListener(kind, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    sendImage(event.dataTransfer.files[0]);
  });
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("this browser gives no camera to a page on plain http except at localhost/127.0.0.1; " +
              "open the page as http://127.0.0.1:PORT on this machine, serve it over https, or upload a photo");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}}, audio: false});
  } catch (err) {
    showError(`no camera (${err.name}: ${err.message}); allow camera access or upload a photo`);
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  $("camera-start").hidden = true;
  $("snapshot").hidden = false;
  $("camera-stop").hidden = false;
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("video").hidden = true;
  $("camera-start").hidden = false;
  $("snapshot").hidden = true;
  $("camera-stop").hidden = true;
}

function snapshot() {
  const video = $("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => predict(blob, "image/jpeg", blob), "image/jpeg", 0.92);
}

// --- drawing a digit ----------------------------------------------------------------------------------------------

function setUpPad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const point = (event) => {
    const rect = pad.getBoundingClientRect();
    return [(event.clientX - rect.left) * pad.width / rect.width, (event.clientY - rect.top) * pad.height / rect.height];
  };
  let drawing = false;
  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    pad.setPointerCapture(event.pointerId);
    strokes.push([point(event)]);
    paintPad(ctx);
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    strokes[strokes.length - 1].push(point(event));
    paintPad(ctx);
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    classifyDrawing();
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    strokes = [];
    paintPad(ctx);
    $("seen").getContext("2d").clearRect(0, 0, $("seen").width, $("seen").height);
    clearResult("Waiting for an input.");
  });
  paintPad(ctx);
}

function traceStrokes(ctx, lineWidth) {
  ctx.strokeStyle = ctx.fillStyle = "#fff";
  ctx.lineWidth = lineWidth;
  ctx.lineCap = ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.beginPath();
    ctx.moveTo(...stroke[0]);
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.01, stroke[0][1]);  // a tap is a dot
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

function paintPad(ctx) {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  traceStrokes(ctx, ctx.canvas.width * 0.07);
}

// The strokes redrawn at the model's input size the way its training digits look: white on black, centred, as tall
// (or wide) as the frame, pen STROKE_SHARE of the side; drawn SUPERSAMPLE times larger, then box-averaged down.
function renderForModel() {
  const size = current.preprocessing.width;
  const points = strokes.flat();
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const side = Math.max(x1 - x0, y1 - y0, 1);
  const big = size * SUPERSAMPLE;
  const pen = STROKE_SHARE * big;
  const scale = (big - pen) / side;
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = big;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, big, big);
  ctx.setTransform(scale, 0, 0, scale, big / 2 - scale * (x0 + x1) / 2, big / 2 - scale * (y0 + y1) / 2);
  traceStrokes(ctx, pen / scale);
  const pixels = ctx.getImageData(0, 0, big, big).data;
  const seen = $("seen").getContext("2d");
  const out = seen.createImageData(size, size);
  for (let row = 0; row < size; row++) {
    for (let col = 0; col < size; col++) {
      let sum = 0;
      for (let dy = 0; dy < SUPERSAMPLE; dy++) {
        const start = ((row * SUPERSAMPLE + dy) * big + col * SUPERSAMPLE) * 4;
        for (let dx = 0; dx < SUPERSAMPLE; dx++) sum += pixels[start + dx * 4];
      }
      const value = Math.round(sum / (SUPERSAMPLE * SUPERSAMPLE));
      const at = (row * size + col) * 4;
      out.data[at] = out.data[at + 1] = out.data[at + 2] = value;
      out.data[at + 3] = 255;
    }
  }
  seen.putImageData(out, 0, 0);
  return $("seen");
}

function classifyDrawing() {
  if (!strokes.length) return;
  renderForModel().toBlob((blob) => predict(blob, "image/png", null), "image/png");
}

// --- start --------------------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("model").addEventListener("change", chooseModel);
  $("classify-text").addEventListener("click", () => {
    const text = $("text").value;
    if (!text.trim()) {
      showError("type a text first");
      return;
    }
    predict(JSON.stringify({text}), "application/json", null);
  });
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("snapshot").addEventListener("click", snapshot);
  setUpDrop();
  setUpPad();
  loadModels().catch((err) => showError(`cannot list the models (${err.message})`));
});
