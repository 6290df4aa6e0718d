// Refresh to show new replies, unless the user is composing a message.
"use strict";
setTimeout(() => {
  const form = document.querySelector("form.compose");
  const composing =
    form &&
    ((form.elements.text && form.elements.text.value) ||
      (form.elements.attachment && form.elements.attachment.files.length) ||
      (form.elements.voice && form.elements.voice.checked));
  if (!composing) location.reload();
}, 2500);
