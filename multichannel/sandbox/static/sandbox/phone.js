// Refresh to show new replies, unless the user is typing a message.
"use strict";
setTimeout(() => {
  const active = document.activeElement;
  if (!active || active.name !== "text" || !active.value) location.reload();
}, 2500);
