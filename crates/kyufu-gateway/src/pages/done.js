// The completion page at its own address (/done): shows the receipts kept in this browser, so a
// reload, or coming back later on the same phone, still shows each reference and code.
"use strict";
(function () {
  const M = JSON.parse(document.getElementById("msgs").textContent);
  const list = document.getElementById("done-list");
  const receipts = kyufu.receipts();
  document.getElementById("none").hidden = receipts.length > 0;
  document.getElementById("some").hidden = receipts.length === 0;
  receipts.forEach((r) => list.appendChild(kyufu.receiptItem(r, M)));
  document.getElementById("forget").addEventListener("click", () => {
    kyufu.clearReceipts();
    list.textContent = "";
    document.getElementById("none").hidden = false;
    document.getElementById("some").hidden = true;
  });
})();
