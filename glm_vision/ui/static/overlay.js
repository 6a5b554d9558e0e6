// GLM's boxes over an answer's picture (ui/overlay.py): hovering a box highlights its text in the answer
// and the other way round; clicking the picture opens it full size in a viewer with zoom and pan, where
// clicking a box (or its number in the list) zooms into it. Event delegation on the document, so it
// works for messages Gradio adds or re-renders later.
(() => {
  if (window.glmvOverlay) return;
  const TARGETS = ".glmv-box, .glmv-point, .glmv-mark, .glmv-viewer-item";
  const pairOf = (el) => [...el.classList].find((c) => c.startsWith("glmv-pair-"));
  let hot = null;

  function setHot(pair) {
    if (pair === hot) return;
    document.querySelectorAll(".glmv-hot").forEach((el) => el.classList.remove("glmv-hot"));
    hot = pair;
    if (pair) document.querySelectorAll("." + pair).forEach((el) => el.classList.add("glmv-hot"));
  }
  const hover = (event) => {
    const target = event.target.closest?.(TARGETS);
    setHot(target ? pairOf(target) : null);
  };
  document.addEventListener("mouseover", hover);
  document.addEventListener("focusin", hover);

  // The chat's copy buttons copy a message's source: the marks added for the overlay left out, and an
  // answer's picture as the address of its copy with the boxes drawn (as Gradio writes a file message).
  const unmark = (text) =>
    text
      .replace(/<mark class="glmv-mark [^"]*">([^<\n]*)<\/mark>/g, "$1")
      .replace(/<div class="glmv-shot"[^\n]*?<a class="glmv-shot-drawn" href="([^"]+)"[^\n]*?<\/a><\/div>/g,
        (_, href) => new URL(href.replaceAll("&amp;", "&"), document.baseURI).href);
  const clipboard = navigator.clipboard;
  if (clipboard?.writeText) {
    const write = clipboard.writeText.bind(clipboard);
    clipboard.writeText = (text) => write(typeof text === "string" ? unmark(text) : text);
  }
  document.addEventListener("copy", (event) => {  // Gradio's fallback without the Clipboard API
    const box = event.target;
    if (box instanceof HTMLTextAreaElement && box.value.includes('<mark class="glmv-mark ')) {
      event.clipboardData.setData("text/plain", unmark(box.value));
      event.preventDefault();
    }
  });

  // ---------------------------------------------------------------------------------------- viewer
  const MAX_SCALE = 32;
  const SAY = navigator.language?.toLowerCase().startsWith("zh")
    ? { out: "缩小", in: "放大", fit: "适合窗口", actual: "实际大小", close: "关闭 (Esc)" }
    : { out: "Zoom out", in: "Zoom in", fit: "Fit", actual: "Actual size", close: "Close (Esc)" };

  class Viewer {
    constructor(shot) {
      const img = shot.querySelector(".glmv-shot-img");
      this.width = img.naturalWidth || Number(img.getAttribute("width"));
      this.height = img.naturalHeight || Number(img.getAttribute("height"));
      this.returnFocus = document.activeElement;
      this.root = this.build(shot);
      document.body.appendChild(this.root);
      this.view = this.root.querySelector(".glmv-viewer-view");
      this.stage = this.root.querySelector(".glmv-viewer-stage");
      this.listen();
      this.fit();
      this.root.querySelector(".glmv-viewer-close").focus();
    }

    build(shot) {
      const root = document.createElement("div");
      root.id = "glmv-viewer";
      root.setAttribute("role", "dialog");
      root.setAttribute("aria-modal", "true");
      root.setAttribute("aria-label", shot.title);
      const bar = document.createElement("div");
      bar.className = "glmv-viewer-bar";
      const button = (cls, text, title) =>
        Object.assign(document.createElement("button"), { type: "button", className: cls, textContent: text, title });
      bar.append(
        button("glmv-viewer-out", "−", SAY.out),
        Object.assign(document.createElement("span"), { className: "glmv-viewer-zoom" }),
        button("glmv-viewer-in", "+", SAY.in),
        button("glmv-viewer-fit", "⤢", SAY.fit),
        button("glmv-viewer-actual", "1:1", SAY.actual),
      );
      const list = document.createElement("ol");
      list.className = "glmv-viewer-list";
      for (const box of shot.querySelectorAll(".glmv-box, .glmv-point")) {
        const item = button(`glmv-viewer-item ${pairOf(box)}`, box.title, box.title);
        item.style.setProperty("--glmv-c", box.style.getPropertyValue("--glmv-c"));
        const entry = document.createElement("li");
        entry.append(item);
        list.append(entry);
      }
      bar.append(list, button("glmv-viewer-close", "✕", SAY.close));
      const view = document.createElement("div");
      view.className = "glmv-viewer-view";
      const stage = document.createElement("div");
      stage.className = "glmv-viewer-stage";
      const copy = shot.cloneNode(true);
      copy.removeAttribute("role");
      Object.assign(copy.style, { width: `${this.width}px`, height: `${this.height}px`, display: "block" });
      copy.querySelectorAll("[tabindex]").forEach((el) => el.setAttribute("tabindex", "-1"));
      stage.append(copy);
      view.append(stage);
      root.append(bar, view);
      return root;
    }

    listen() {
      const on = (selector, action) => this.root.querySelector(selector).addEventListener("click", action);
      on(".glmv-viewer-in", () => this.zoomBy(1.5));
      on(".glmv-viewer-out", () => this.zoomBy(1 / 1.5));
      on(".glmv-viewer-fit", () => this.fit());
      on(".glmv-viewer-actual", () => this.zoomBy(1 / this.scale));
      on(".glmv-viewer-close", () => this.close());
      this.root.querySelector(".glmv-viewer-list").addEventListener("click", (event) => {
        const item = event.target.closest(".glmv-viewer-item");
        if (item) this.frame(pairOf(item));
      });
      this.view.addEventListener("wheel", (event) => {
        event.preventDefault();
        const r = this.view.getBoundingClientRect();
        this.zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - r.left, event.clientY - r.top);
      }, { passive: false });
      this.view.addEventListener("pointerdown", (event) => this.dragStart(event));
      this.view.addEventListener("click", (event) => {
        const box = event.target.closest(".glmv-box, .glmv-point");
        if (box && !this.dragged) this.frame(pairOf(box));
      });
      this.onKey = (event) => {
        if (event.key === "Escape") this.close();
        else if (event.key === "+" || event.key === "=") this.zoomBy(1.5);
        else if (event.key === "-") this.zoomBy(1 / 1.5);
      };
      document.addEventListener("keydown", this.onKey, true);
      this.onResize = () => this.fit();
      window.addEventListener("resize", this.onResize);
    }

    dragStart(event) {
      if (event.button !== 0) return;
      const start = { x: event.clientX, y: event.clientY, tx: this.tx, ty: this.ty };
      this.dragged = false;
      const move = (e) => {
        const dx = e.clientX - start.x, dy = e.clientY - start.y;
        if (Math.abs(dx) + Math.abs(dy) > 4) this.dragged = true;
        if (!this.dragged) return;
        this.view.classList.add("glmv-dragging");
        this.tx = start.tx + dx;
        this.ty = start.ty + dy;
        this.apply();
      };
      const up = () => {
        this.view.classList.remove("glmv-dragging");
        window.removeEventListener("pointermove", move);
        window.removeEventListener("pointerup", up);
      };
      window.addEventListener("pointermove", move);
      window.addEventListener("pointerup", up);
    }

    get fitScale() {
      return Math.min(this.view.clientWidth / this.width, this.view.clientHeight / this.height, 1);
    }

    fit() {
      this.scale = this.fitScale;
      this.tx = (this.view.clientWidth - this.width * this.scale) / 2;
      this.ty = (this.view.clientHeight - this.height * this.scale) / 2;
      this.apply();
    }

    // zoom by `factor` keeping the picture's point under (cx, cy) (view pixels; the centre by default) in place
    zoomBy(factor, cx = this.view.clientWidth / 2, cy = this.view.clientHeight / 2) {
      const scale = Math.min(Math.max(this.scale * factor, this.fitScale / 2), MAX_SCALE);
      this.tx = cx - ((cx - this.tx) * scale) / this.scale;
      this.ty = cy - ((cy - this.ty) * scale) / this.scale;
      this.scale = scale;
      this.apply();
    }

    // zoom so the box (or a region around the point) of `pair` fills most of the view, centred
    frame(pair) {
      const box = pair && this.stage.querySelector(`.glmv-box.${pair}, .glmv-point.${pair}`);
      if (!box) return;
      const point = box.classList.contains("glmv-point");
      const [x, y] = ["left", "top"].map((side, i) => (parseFloat(box.style[side]) / 100) * [this.width, this.height][i]);
      const w = point ? this.width / 8 : (parseFloat(box.style.width) / 100) * this.width;
      const h = point ? this.height / 8 : (parseFloat(box.style.height) / 100) * this.height;
      const [cx, cy] = point ? [x, y] : [x + w / 2, y + h / 2];
      const vw = this.view.clientWidth, vh = this.view.clientHeight;
      this.scale = Math.min((0.8 * vw) / Math.max(w, 1), (0.8 * vh) / Math.max(h, 1), MAX_SCALE);
      this.tx = vw / 2 - cx * this.scale;
      this.ty = vh / 2 - cy * this.scale;
      this.apply();
      setHot(pair);
    }

    apply() {
      this.stage.style.transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.scale})`;
      this.stage.style.setProperty("--glmv-inv", String(1 / this.scale));
      this.root.dataset.scale = String(this.scale);
      this.root.querySelector(".glmv-viewer-zoom").textContent = `${Math.round(this.scale * 100)}%`;
    }

    close() {
      document.removeEventListener("keydown", this.onKey, true);
      window.removeEventListener("resize", this.onResize);
      this.root.remove();
      if (window.glmvOverlay.viewer === this) window.glmvOverlay.viewer = null;
      this.returnFocus?.focus?.();
    }
  }

  function open(shot, pair) {
    window.glmvOverlay.viewer?.close();
    const viewer = new Viewer(shot);
    window.glmvOverlay.viewer = viewer;
    if (pair) viewer.frame(pair);
  }

  document.addEventListener("click", (event) => {
    const shot = event.target.closest?.(".glmv-shot");
    if (!shot || shot.closest("#glmv-viewer") || event.target.closest("a")) return;
    const box = event.target.closest(".glmv-box, .glmv-point");
    const img = shot.querySelector(".glmv-shot-img");
    const go = () => open(shot, box && pairOf(box));
    if (img.complete) go();
    else img.addEventListener("load", go, { once: true });
  });
  document.addEventListener("keydown", (event) => {
    const box = event.target.closest?.(".glmv-shot .glmv-box, .glmv-shot .glmv-point");
    if (box && !box.closest("#glmv-viewer") && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      box.click();
    }
  });

  window.glmvOverlay = { viewer: null, open };
})();
