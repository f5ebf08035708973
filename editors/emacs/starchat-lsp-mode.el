;;; starchat-lsp-mode.el --- The StarChat language server in lsp-mode  -*- lexical-binding: t -*-

;; Load it from your init file (after lsp-mode is available):
;;
;;   (setq starchat-initialization-options            ; optional
;;         '(:starchat (:generation (:max_new_tokens 256))))
;;   (load "/path/to/starchat-lsp/editors/emacs/starchat-lsp-mode.el")
;;
;; then `M-x lsp' in a Python buffer, select code and `M-x lsp-execute-code-action'.
;; StarChat runs as an add-on next to your usual Python server.
;; Tested by tests/editors/test_emacs.py (Emacs 28.2, lsp-mode 8.0.0 from Debian).
;;
;; lsp-mode waits for commands synchronously (`lsp-response-timeout', 10 s), so the
;; server answers at once and delivers later: Fix and Add docstring as an edit, Explain,
;; Write tests and chat as a message when complete (the whole conversation is also in a
;; Markdown file the message names), progress in the mode line meanwhile.

;;; Code:

(require 'lsp-mode)

(defvar starchat-command '("starchat" "lsp")
  "How to start the StarChat language server (program and arguments).")

(defvar starchat-initialization-options nil
  "The server's settings sent as initializationOptions, or nil for the defaults.
For example (:starchat (:generation (:max_new_tokens 256))).")

(defvar starchat--tokens nil
  "Progress tokens of the answers started in this Emacs, newest first.")

(lsp-register-client
 (make-lsp-client
  :new-connection (lsp-stdio-connection (lambda () starchat-command))
  :activation-fn (lsp-activate-on "python")
  :add-on? t
  :server-id 'starchat
  :initialization-options (lambda () starchat-initialization-options)))

(defun starchat--remember-token (answer)
  "Remember the progress token of a StarChat ANSWER started in the background."
  (when (and (hash-table-p answer) (equal (gethash "state" answer) "started"))
    (push (gethash "token" answer) starchat--tokens))
  (when (and (listp answer) (equal (plist-get answer :state) "started"))
    (push (plist-get answer :token) starchat--tokens))
  answer)
(advice-add 'lsp-workspace-command-execute :filter-return #'starchat--remember-token)

(defun starchat-cancel ()
  "Stop the StarChat answer started last (window/workDoneProgress/cancel)."
  (interactive)
  (let ((token (pop starchat--tokens)))
    (unless token
      (user-error "No StarChat answer was started"))
    (lsp-notify "window/workDoneProgress/cancel" (list :token token))
    (message "StarChat: asked to stop")))

(provide 'starchat-lsp-mode)
;;; starchat-lsp-mode.el ends here
