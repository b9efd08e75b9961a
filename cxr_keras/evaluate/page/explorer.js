// The operating-point explorer of report.html: a threshold slider over metrics.json's `operating_points`.
// Every number shown is read from that table (counts, sensitivity, specificity and their bootstrap intervals);
// only PPV and NPV at a typed prevalence are worked out here, by Bayes' rule from sensitivity and specificity.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("op-data").textContent);
  var names = Object.keys(data);
  var finding = names[0];
  var slider = document.getElementById("op-slider");
  var choose = document.getElementById("op-finding");
  var prevalence = document.getElementById("op-prevalence");
  var SIZE = 240, PAD = 28;

  function el(id) { return document.getElementById(id); }
  function show(id, text) { el(id).textContent = text; }
  function fixed(v) { return v === null || v === undefined || !isFinite(v) ? "n/a" : v.toFixed(3); }
  function ci(pair) { return pair ? "[" + pair[0].toFixed(3) + ", " + pair[1].toFixed(3) + "]" : "n/a"; }
  function ratio(a, b) { return b > 0 ? a / b : null; }
  function x(v) { return PAD + v * (SIZE - 1.5 * PAD); }
  function y(v) { return SIZE - PAD - v * (SIZE - 1.5 * PAD); }
  function chosenIndex(t) { return t.threshold.indexOf(t.chosen); }

  function polyline(xs, ys) {
    var points = [];
    for (var i = 0; i < xs.length; i++) { points.push(x(xs[i]).toFixed(1) + "," + y(ys[i]).toFixed(1)); }
    return points.join(" ");
  }

  function draw(svgId, xs, ys, xLabel, yLabel) {
    var svg = el(svgId);
    svg.querySelector(".line").setAttribute("points", polyline(xs, ys));
    svg.querySelector(".xlabel").textContent = xLabel;
    svg.querySelector(".ylabel").textContent = yLabel;
  }

  function mark(svgId, cls, px, py) {
    var dot = el(svgId).querySelector("." + cls);
    var ok = px !== null && py !== null;
    dot.setAttribute("visibility", ok ? "visible" : "hidden");
    if (ok) { dot.setAttribute("cx", x(px).toFixed(1)); dot.setAttribute("cy", y(py).toFixed(1)); }
  }

  function select(name) {
    finding = name;
    var t = data[name];
    slider.max = t.threshold.length - 1;
    slider.value = chosenIndex(t);
    draw("op-roc", t.roc.fpr, t.roc.tpr, "1 - specificity", "sensitivity");
    draw("op-pr", t.pr.recall, t.pr.precision, "recall (sensitivity)", "precision (PPV)");
    var c = chosenIndex(t);
    mark("op-roc", "chosen", 1 - t.specificity[c], t.sensitivity[c]);
    mark("op-pr", "chosen", t.sensitivity[c], ratio(t.tp[c], t.tp[c] + t.fp[c]));
    show("op-chosen", t.chosen.toPrecision(4));
    show("op-set-prevalence", (100 * t.prevalence).toFixed(1) + "%");
    if (!prevalence.value) { prevalence.value = (100 * t.prevalence).toFixed(1); }
    update();
  }

  function update() {
    var t = data[finding], i = Number(slider.value);
    var tp = t.tp[i], fp = t.fp[i], tn = t.tn[i], fn = t.fn[i];
    var sens = t.sensitivity[i], spec = t.specificity[i];
    slider.setAttribute("aria-valuetext", "threshold " + t.threshold[i].toPrecision(4));
    show("op-threshold", t.threshold[i].toPrecision(4));
    show("op-at-chosen", i === chosenIndex(t) ? "(the chosen threshold)" : "");
    show("op-sensitivity", fixed(sens)); show("op-sensitivity-ci", ci(t.sensitivity_ci[i]));
    show("op-specificity", fixed(spec)); show("op-specificity-ci", ci(t.specificity_ci[i]));
    show("op-ppv", fixed(ratio(tp, tp + fp))); show("op-npv", fixed(ratio(tn, tn + fn)));
    show("op-tp", tp); show("op-fp", fp); show("op-tn", tn); show("op-fn", fn);
    el("op-prevalence-printed").textContent = prevalence.value;
    if (el("op-finding-printed")) { el("op-finding-printed").textContent = finding; }
    var p = Number(prevalence.value) / 100;
    var valid = isFinite(p) && p > 0 && p < 1;
    show("op-ppv-user", valid ? fixed(ratio(sens * p, sens * p + (1 - spec) * (1 - p))) : "n/a");
    show("op-npv-user", valid ? fixed(ratio(spec * (1 - p), spec * (1 - p) + (1 - sens) * p)) : "n/a");
    prevalence.setCustomValidity(valid ? "" : "a prevalence between 0 and 100 %");
    mark("op-roc", "now", 1 - spec, sens);
    mark("op-pr", "now", sens, ratio(tp, tp + fp));
  }

  slider.addEventListener("input", update);
  prevalence.addEventListener("input", update);
  el("op-reset").addEventListener("click", function () { slider.value = chosenIndex(data[finding]); update(); });
  if (choose) { choose.addEventListener("change", function () { select(choose.value); }); }
  select(finding);
})();
